"""CLI: ``leadflow serve`` and ``leadflow forms ...``: thin wrappers over intake."""

import html
import logging

import click
from peewee import IntegrityError

from leadflow.app import echo_json, echo_table, pass_app
from leadflow.config import SECRET_MASK
from leadflow.errors import LeadflowError
from leadflow.intake import forms as forms_module


@click.command()
@click.option("--smtp-port", type=click.IntRange(0, 65535), default=None,
              help="SMTP port (default smtp.port, 8025); 0 picks a free one and prints it.")
@click.option("--http-port", type=click.IntRange(0, 65535), default=None,
              help="HTTP port (default http.port, 8080); 0 picks a free one and prints it.")
@click.option("--grace", type=click.FloatRange(0), default=10.0, show_default=True,
              help="Seconds to let sessions in flight finish on SIGTERM/SIGINT.")
@click.option("--no-worker", is_flag=True,
              help="Receive only: store inquiries, let other instances process them.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="What the server logs to stderr.")
@pass_app
def serve(app, smtp_port, http_port, grace, no_worker, log_level):
    """Receive inquiries by SMTP and web form and process them, until SIGTERM/SIGINT."""
    from leadflow.intake.server import prepare_database, serve as run_server
    from leadflow.store.database import shutdown_executor

    if not getattr(app, "debug", False):
        logging.getLogger("leadflow").setLevel(log_level.upper())
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    database = app.open_db(migrate_check=False)
    try:
        prepare_database(database)
        run_server(app.config, smtp_port, http_port, grace=grace, worker=not no_worker)
    except (LeadflowError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        shutdown_executor()


@click.group("forms")
def forms_group():
    """Web forms that may post to the webhook."""


def _endpoint(config, name):
    base = config.http.public_url.rstrip("/") or f"http://{config.http.host}:{config.http.port}"
    return f"{base}/forms/{name}"


def _mask(secret):
    return (secret[:6] + SECRET_MASK) if secret else ""


def _form(app, name):
    app.open_db()
    try:
        form = forms_module.get_form(name, app.config)
    except LeadflowError as exc:
        raise click.ClickException(str(exc)) from None
    if form is None:
        raise click.ClickException(f"no form {name!r}; see `leadflow forms list`")
    return form


@forms_group.command("add")
@click.argument("name")
@click.option("--preset", type=click.Choice(forms_module.PRESETS), default="plain", show_default=True)
@click.option("--origin", "origins", multiple=True, metavar="URL",
              help="A site allowed to post from browsers (repeatable), e.g. https://www.example.com")
@click.option("--return-url", metavar="URL", help="Where browsers go after posting.")
@click.option("--require", "required", multiple=True, type=click.Choice(forms_module.OUR_FIELDS),
              help="A field a submission must have (repeatable; default: email).")
@click.option("--honeypot", metavar="FIELD",
              help=f"The hidden spam-trap field (default {forms_module.DEFAULT_HONEYPOT}).")
@pass_app
def forms_add(app, name, preset, origins, return_url, required, honeypot):
    """Create the form NAME with a fresh public key and signing secret."""
    app.open_db()
    if name in (app.config.forms or {}):
        raise click.ClickException(f"form {name!r} is declared in the configuration file already")
    try:
        row = forms_module.add_form(name, preset, origins, return_url,
                                    required=list(required) if required else None,
                                    honeypot=honeypot)
    except LeadflowError as exc:
        raise click.ClickException(str(exc).replace("config: ", "")) from None
    except IntegrityError:
        raise click.ClickException(f"form {name!r} exists already") from None
    click.echo(f"form {row.name} created ({row.preset})")
    click.echo(f"endpoint:    {_endpoint(app.config, row.name)}")
    click.echo(f"public key:  {row.public_key}")
    click.echo(f"secret:      {row.secret}   (shown once; `forms show` masks it)")
    click.echo(f"HTML form:   leadflow forms snippet {row.name}")


def _database_form(app, name, verb):
    app.open_db()
    if name in (app.config.forms or {}):
        raise click.ClickException(f"form {name!r} is declared in the configuration file; "
                                   f"{verb} it there")


@forms_group.command("rotate")
@click.argument("name")
@click.option("--public-key", "public_key", is_flag=True,
              help="Also replace the public key (pasted HTML forms must then be updated).")
@pass_app
def forms_rotate(app, name, public_key):
    """Give the form NAME a new signing secret (and public key); the old ones stop working."""
    _database_form(app, name, "change")
    row = forms_module.rotate_form(name, public_key=public_key)
    if row is None:
        raise click.ClickException(f"no form {name!r}; see `leadflow forms list`")
    click.echo(f"form {row.name}: new signing secret; the old one is refused from now on")
    if public_key:
        click.echo(f"public key:  {row.public_key}   (update the pasted HTML: "
                   f"`leadflow forms snippet {row.name}`)")
    click.echo(f"secret:      {row.secret}   (shown once; `forms show` masks it)")


@forms_group.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def forms_remove(app, name, yes):
    """Delete the form NAME: its endpoint answers 404 from then on; stored posts stay."""
    _database_form(app, name, "remove")
    if forms_module.get_form(name, app.config) is None:
        raise click.ClickException(f"no form {name!r}; see `leadflow forms list`")
    if not yes:
        click.confirm(f"Remove form {name!r}? Posts to it will be refused", abort=True)
    forms_module.remove_form(name)
    click.echo(f"form {name} removed; its stored posts and leads stay")


@forms_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def forms_list(app, as_json):
    """The forms of the configuration and the database."""
    app.open_db()
    try:
        forms = forms_module.all_forms(app.config)
    except LeadflowError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json([_describe(app.config, f) for f in forms.values()])
        return
    echo_table(["name", "preset", "from", "origins", "endpoint"],
               [[f.name, f.preset, f.source, " ".join(f.origins), _endpoint(app.config, f.name)]
                for f in forms.values()], empty="no forms; add one with `leadflow forms add NAME`")


def _describe(config, form):
    mapping = dict(forms_module.SALESFORCE_MAPPING) if form.preset == "salesforce" else {}
    mapping.update(form.mapping)
    return {"name": form.name, "preset": form.preset, "from": form.source,
            "endpoint": _endpoint(config, form.name), "public_key": form.public_key,
            "secret": _mask(form.secret), "origins": form.origins, "return_url": form.return_url,
            "required": form.required, "honeypot": form.honeypot, "mapping": mapping}


@forms_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def forms_show(app, name, as_json):
    """One form: endpoint, public key, masked secret, mapping."""
    data = _describe(app.config, _form(app, name))
    if as_json:
        echo_json(data)
        return
    for key in ("name", "preset", "from", "endpoint", "public_key", "secret", "return_url", "honeypot"):
        click.echo(f"{key + ':':12} {data[key] or '-'}")
    click.echo(f"{'origins:':12} {' '.join(data['origins']) or '- (any; key only)'}")
    click.echo(f"{'required:':12} {', '.join(data['required']) or '-'}")
    click.echo("mapping:     " + (", ".join(f"{k} -> {v}" for k, v in data["mapping"].items())
                                  or "(preset synonyms: name, email, company, phone, message, ...)"))


SNIPPET_FIELDS = {
    "salesforce": [("first_name", "First name", "text"), ("last_name", "Last name", "text"),
                   ("email", "Email", "email"), ("company", "Company", "text"),
                   ("phone", "Phone", "tel"), ("description", "Message", "textarea")],
}
PLAIN_FIELDS = [("name", "Name", "text"), ("email", "Email", "email"), ("company", "Company", "text"),
                ("phone", "Phone", "tel"), ("message", "Message", "textarea")]


@forms_group.command("snippet")
@click.argument("name")
@pass_app
def forms_snippet(app, name):
    """A ready-to-paste HTML form that posts to NAME (with its key and honeypot)."""
    form = _form(app, name)
    if not form.public_key:
        raise click.ClickException(f"form {name!r} has no public key: it takes signed posts only")
    e = html.escape
    lines = [f'<form action="{e(_endpoint(app.config, name))}" method="POST">',
             f'  <input type="hidden" name="{forms_module.KEY_FIELD}" value="{e(form.public_key)}">']
    if form.return_url:
        lines.append(f'  <input type="hidden" name="retURL" value="{e(form.return_url)}">')
    for field, label, kind in SNIPPET_FIELDS.get(form.preset, PLAIN_FIELDS):
        required = " required" if field in form.required or (field == "email") else ""
        if kind == "textarea":
            control = f'<textarea name="{field}" rows="5"{required}></textarea>'
        else:
            control = f'<input type="{kind}" name="{field}"{required}>'
        lines.append(f"  <label>{label} {control}</label>")
    lines += [
        "  <!-- leave empty: people never see it, robots fill it in -->",
        f'  <div style="position:absolute;left:-10000px" aria-hidden="true"><input type="text" '
        f'name="{e(form.honeypot)}" tabindex="-1" autocomplete="off"></div>',
        '  <button type="submit">Send</button>',
        "</form>",
    ]
    click.echo("\n".join(lines))


def register(main):
    main.add_command(serve)
    main.add_command(forms_group)
