from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from hive_project.models import ApiToken


class Command(BaseCommand):
    help = "Create a long-lived API token for USER and print it (it is shown only once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="What will use the token (shown in the admin).")

    def handle(self, *args: Any, username: str, name: str, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named '{username}'. Create one first (createsuperuser or the admin).")
        _, key = ApiToken.issue(user, name)
        self.stdout.write(key)
