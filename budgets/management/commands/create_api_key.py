"""python manage.py create_api_key --tenant NAME [--role ROLE] [--name LABEL] [--expires-days N]"""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.text import slugify

from budgets import audit
from budgets.models import ApiKey, Tenant
from budgets.roles import Role


class Command(BaseCommand):
    help = "Create an API key (and the tenant, if new). The plaintext key is printed alone on the last line, once."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="tenant name (created if it does not exist)")
        parser.add_argument("--role", default=Role.DEVELOPER, choices=[r.value for r in Role])
        parser.add_argument("--name", default="", help="a label for the key")
        parser.add_argument("--expires-days", type=int, default=None, help="days until the key expires")

    def handle(self, *args, tenant: str, role: str, name: str, expires_days: int | None, **options):
        slug = slugify(tenant)
        if not slug or slug != tenant:
            raise CommandError(f"--tenant must be a slug (letters, digits, - and _), e.g. {slug or 'acme'!r}")
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be at least 1")
        tenant_obj, created = Tenant.objects.get_or_create(name=tenant)
        expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
        api_key, plaintext = ApiKey.issue(tenant_obj, role=role, name=name, expires_at=expires_at, actor=audit.COMMAND)
        if created:
            self.stderr.write(f"created tenant {tenant_obj.name}")
        self.stderr.write(f"created {role} key {api_key.key_id} for tenant {tenant_obj.name}; it will not be shown again")
        self.stdout.write(plaintext)
