"""Digests and alerts as mail: jinja2 templates, a text and an HTML part.

Templates live in ``notify/templates`` and are named by audience and purpose:
``rep_digest.txt`` / ``rep_digest.html``, ``admin_digest.txt`` /
``admin_digest.html``, ``hot_alert.txt``. HTML templates are autoescaped (lead
fields come from strangers: a ``<script>`` in a name arrives as text); text
templates are not. The HTML is tables with inline CSS and no images, so it
reads the same in desktop mail clients and on a phone.

Every message is ``multipart/alternative`` (text first, HTML second), carries
the deterministic ``Message-ID`` it is given, and ``Auto-Submitted:
auto-generated`` so that auto-responders stay quiet.
"""

import email.utils
from email.message import EmailMessage

import jinja2

env = jinja2.Environment(
    loader=jinja2.PackageLoader("leadflow.notify", "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)


def _date_text(day):
    return f"{day:%A} {day.day} {day:%B %Y}"


def _plural(n, one, many=None):
    return f"{n} {one if n == 1 else (many or one + 's')}"


def rep_subject(digest):
    t = digest.totals
    parts = [f"{t['new']} new", f"{t['convert']} to convert",
             _plural(t["followups"], "follow-up"), f"{t['stale']} stale"]
    return f"Your leads for {digest.local_date:%a} {digest.local_date.day} {digest.local_date:%b}: " \
           + ", ".join(parts)


def admin_subject(digest):
    rate = (f" ({digest.qualification_rate:.0%} qualified)"
            if digest.qualification_rate is not None else "")
    return (f"leadflow intake for {digest.day:%a} {digest.day.day} {digest.day:%b}: "
            f"{_plural(digest.inbound_total, 'inquiry', 'inquiries')}, "
            f"{_plural(digest.leads_created, 'lead')}{rate}, {digest.failed_total} failed")


def _context(digest, config, message_id):
    from leadflow.notify.digest import rep_zone

    rep = digest.rep
    context = {"rep": rep, "message_id": message_id, "zone": str(rep_zone(rep, config))}
    if digest.kind == "admin":
        context.update(d=digest, subject=admin_subject(digest), day_text=_date_text(digest.day),
                       zone=config.notify.timezone)
    else:
        context.update(
            subject=rep_subject(digest), date_text=_date_text(digest.local_date),
            totals=digest.totals, overdue=digest.overdue, pipeline=digest.pipeline,
            new_leads=digest.new_leads, to_convert=digest.to_convert,
            followups=digest.followups, stale=digest.stale, empty=digest.empty,
            hour=config.notify.digest_hour if rep.digest_hour is None else rep.digest_hour)
    return context


def render_digest(digest, config, message_id):
    """``(subject, text, html)`` of a rep or admin digest."""
    context = _context(digest, config, message_id)
    name = "admin_digest" if digest.kind == "admin" else "rep_digest"
    text = env.get_template(f"{name}.txt").render(context)
    html = env.get_template(f"{name}.html").render(context)
    return context["subject"], text, html


def _one_line(text):
    return " ".join(str(text).split())


def _message(config, to_name, to_address, subject, message_id):
    message = EmailMessage()
    message["From"] = config.notify.from_
    message["To"] = email.utils.formataddr((_one_line(to_name or ""), to_address))
    message["Subject"] = _one_line(subject)
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    return message


def digest_message(digest, config, message_id):
    """The digest as a ``multipart/alternative`` :class:`EmailMessage` to the rep."""
    subject, text, html = render_digest(digest, config, message_id)
    message = _message(config, digest.rep.name, digest.rep.email, subject, message_id)
    message["X-Leadflow-Digest"] = f"{digest.kind} {digest.local_date.isoformat()}"
    message.set_content(text, cte=_cte(text))
    message.add_alternative(html, subtype="html", cte="base64")  # binascii: fast for 50 kB
    return message


def _cte(text):
    """7bit for plain ASCII text (readable as it is), else quoted-printable."""
    return "7bit" if text.isascii() and max(map(len, text.splitlines() or [""])) <= 998 \
        else "quoted-printable"


def hot_alert_message(rep, lead, item, config, message_id):
    """A short text alert: one lead reached the hot score."""
    text = env.get_template("hot_alert.txt").render(rep=rep, lead=lead, item=item,
                                                    message_id=message_id)
    subject = f"Hot lead: {item.title}" + (f" ({item.organisation})" if item.organisation else "") \
        + f", score {item.score}"
    message = _message(config, rep.name, rep.email, subject, message_id)
    message.set_content(text)
    return message
