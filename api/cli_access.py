"""`advocacy keys create|list|revoke` and `advocacy token`: credentials from the command line.

A key is printed once, when it is created; the store keeps only its hash. `--quiet` prints the key alone, so a
script can capture it (`KEY=$(advocacy keys create demo --scope admin --quiet)`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from api.cli_common import fail, settings_from_context, store_from_context
from engine.access import SCOPE_HELP, Scope, issue_customer_token, new_api_key, token_keys
from graph.errors import AdvocacyError
from graph.model import utcnow

keys_app = typer.Typer(no_args_is_help=True, help="Marketer API keys: stored hashed, each with scopes.")
console = Console()


@keys_app.command("create")
def create_key(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who or what uses the key, e.g. 'checkout backend'.")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", "-s", help="Repeat for several: " + ", ".join(s.value for s in Scope)),
    ],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the key.")] = False,
) -> None:
    """Create a key and print it once."""
    try:
        record, key = new_api_key(name, scope, now=utcnow())
        with store_from_context(ctx) as store:
            store.save_api_key(record)
    except AdvocacyError as exc:
        raise fail(exc) from None
    if quiet:
        print(key)
        return
    console.print(f"API key [bold]{record.id}[/] ({name}), scopes: {', '.join(record.scopes)}")
    console.print(f"[bold green]{key}[/]", soft_wrap=True, highlight=False)
    console.print("Store it now: it is not shown again.")


@keys_app.command("list")
def list_keys(ctx: typer.Context) -> None:
    """List keys (never their secrets)."""
    try:
        with store_from_context(ctx) as store:
            keys = store.list_api_keys()
    except AdvocacyError as exc:
        raise fail(exc) from None
    table = Table("id", "name", "scopes", "created", "revoked")
    for key in keys:
        table.add_row(
            key.id,
            key.name,
            ", ".join(key.scopes),
            key.created_at.strftime("%Y-%m-%d %H:%M"),
            key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def revoke_key(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The id shown by `keys list`.")]) -> None:
    """Revoke a key at once, with the browser sessions signed in with it."""
    try:
        with store_from_context(ctx) as store:
            key = store.revoke_api_key(key_id, at=utcnow())
    except AdvocacyError as exc:
        raise fail(exc) from None
    console.print(f"revoked {key.id} ({key.name})")


@keys_app.command("scopes")
def list_scopes() -> None:
    """What each scope allows."""
    table = Table("scope", "allows")
    for scope, text in SCOPE_HELP.items():
        table.add_row(scope.value, text)
    console.print(table)


def customer_token_command(
    ctx: typer.Context,
    customer_id: Annotated[str, typer.Argument(help="The customer the token speaks for.")],
    ttl: Annotated[int, typer.Option(help="Seconds the token lives (capped by the server's maximum).")] = 900,
    link: Annotated[bool, typer.Option("--link", help="Print the customer page link instead of the token.")] = False,
) -> None:
    """Sign a customer token with the configured key, as a merchant's backend would (for trials and support)."""
    settings = settings_from_context(ctx)
    ttl = min(ttl, settings.api.customer_token_max_ttl_s)
    try:
        token, _ = issue_customer_token(
            token_keys(settings), settings.api.customer_token_kid, customer_id, now=utcnow(), ttl=timedelta(seconds=ttl)
        )
    except AdvocacyError as exc:
        raise fail(exc) from None
    print(f"{settings.api.public_base_url.rstrip('/')}/me/enter?token={token}" if link else token)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys", short_help="Create, list and revoke marketer API keys.")
    app.command("token", short_help="Sign a short-lived customer token (or their page link).")(customer_token_command)
