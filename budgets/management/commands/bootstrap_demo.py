"""Ensure the demo tenant, agent, admin user and API key exist; idempotent across `make run`s.

The demo key and admin password are kept under var/ (mode 0600) so re-runs print the same ones.
"""

from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils.crypto import get_random_string

from agents.models import Agent
from budgets import keys
from budgets.models import ApiKey, Tenant
from budgets.roles import Role

DEMO_TENANT = "demo"
DEMO_AGENT = "assistant"


def _write_secret(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


class Command(BaseCommand):
    help = "Create (once) the demo tenant, its `assistant` agent, an admin user and an API key."

    def add_arguments(self, parser):
        parser.add_argument("--port", default="8000")
        parser.add_argument("--var", default=str(settings.BASE_DIR / "var"))

    def handle(self, *args, port: str, var: str, **options):
        var_dir = Path(var)
        var_dir.mkdir(parents=True, exist_ok=True)
        tenant, _ = Tenant.objects.get_or_create(name=DEMO_TENANT)
        Agent.objects.get_or_create(
            tenant=tenant,
            name=DEMO_AGENT,
            defaults={"system_prompt": "You are a helpful, concise assistant.", "default_params": {"max_tokens": 256}},
        )

        key_file = var_dir / "demo_api_key"
        plaintext = key_file.read_text().strip() if key_file.exists() else ""
        parsed = keys.parse(plaintext) if plaintext else None
        if not parsed or not ApiKey.objects.usable().filter(key_id=parsed[0], tenant=tenant).exists():
            _, plaintext = ApiKey.issue(tenant, role=Role.ADMIN, name="demo (make run)")
            _write_secret(key_file, plaintext)

        admin_file = var_dir / "admin_credentials"
        User = get_user_model()
        if not User.objects.filter(username="admin").exists() or not admin_file.exists():
            password = get_random_string(20)
            user, _ = User.objects.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
            user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save()
            _write_secret(admin_file, f"username: admin\npassword: {password}\n")

        base = f"http://127.0.0.1:{port}/v1"
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"  Demo tenant '{DEMO_TENANT}', agent '{DEMO_AGENT}'. API key (also in {key_file}):",
                    f"    {plaintext}",
                    "  Try it:",
                    f"    curl {base}/chat/completions -H 'Authorization: Bearer {plaintext}' \\",
                    "      -H 'Content-Type: application/json' \\",
                    f'      -d \'{{"model": "{DEMO_AGENT}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\'',
                    "",
                ]
            )
        )
