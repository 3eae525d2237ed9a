# Production image: the runtime requirements only (no embedded PostgreSQL, no local model).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 SENTINEL_ENV=production
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
RUN SENTINEL_SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
    SENTINEL_AUDIT_KEY="$(python -c 'import secrets; print(secrets.token_hex(32))')" \
    SENTINEL_ALLOWED_HOSTS=build DATABASE_URL=postgresql://build@localhost/build \
    python manage.py collectstatic --no-input
RUN useradd --create-home sentinel
USER sentinel
EXPOSE 8000
CMD ["python", "-m", "uvicorn", "sentinel_site.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--no-access-log", "--no-proxy-headers", "--timeout-graceful-shutdown", "30", "--lifespan", "on"]
