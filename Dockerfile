# Production image: one image for every role. Its default command is the web server; the worker,
# beat and the migration job run the same image with their own commands (Procfile,
# docker-compose.yml, deploy/k8s/). No embedded PostgreSQL, no local model; the embedding model is
# built into it (SENTINEL_EMBEDDINGS=onnx, the default), so no process builds it at run time.
#
# torch (needed to export the embedding model, and named in its recipe) comes from PyPI, which on
# x86-64 Linux brings CUDA libraries (several GB). For a CPU-only image, point pip at PyTorch's CPU
# wheel index: docker build --build-arg PIP_EXTRA_INDEX_URL=<that index> .
FROM python:3.11-slim
ARG PIP_EXTRA_INDEX_URL=
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 SENTINEL_ENV=production \
    SENTINEL_STATIC_EMBEDDINGS_DIR=/app/embeddings SENTINEL_DATA_DIR=/tmp/sentinel
WORKDIR /app
COPY requirements.txt requirements-embeddings.txt ./
RUN pip install -r requirements.txt -r requirements-embeddings.txt
# .dockerignore keeps .venv and var/ (the development database, secret key and credentials) out.
COPY . .
# Build-time settings only: throwaway secrets and a database that is never connected to.
RUN export SENTINEL_SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
        SENTINEL_AUDIT_KEY="$(python -c 'import secrets; print(secrets.token_hex(32))')" \
        SENTINEL_ALLOWED_HOSTS=build DATABASE_URL=postgresql://build@localhost/build SENTINEL_PROCESS=manage \
    && python manage.py collectstatic --no-input \
    && python manage.py build_embedder --model onnx
# A numeric user, so Kubernetes' runAsNonRoot can check it (deploy/k8s/ runs as 1000).
RUN useradd --create-home --uid 1000 sentinel
USER 1000
EXPOSE 8000
CMD ["python", "-m", "uvicorn", "sentinel_site.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--no-access-log", "--no-proxy-headers", "--timeout-graceful-shutdown", "30", "--timeout-keep-alive", "75", "--lifespan", "on"]
