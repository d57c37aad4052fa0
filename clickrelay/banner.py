"""What a running :class:`~clickrelay.stack.Stack` tells people: where each listener is
bound, the few lines printed at start for a person at a terminal, and the one-line
summary sent to systemd as ``STATUS`` (``systemctl status``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clickrelay.common.hostport import parse_hostport

if TYPE_CHECKING:
    from clickrelay.stack import Stack


def _hostport_text(listen: str, port: int | None) -> str:
    host, _ = parse_hostport(listen)
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}"


def listening(stack: Stack) -> dict[str, str]:
    """``name -> host:port`` of every bound listener."""
    out: dict[str, str] = {}
    cfg = stack.config
    if stack.proxy is not None:
        out["smtp"] = _hostport_text(cfg.proxy.listen, stack.proxy.port)
        if cfg.proxy.tls_listen and stack.proxy.tls_port is not None:
            out["smtps"] = _hostport_text(cfg.proxy.tls_listen, stack.proxy.tls_port)
        if stack.kind == "proxy" and cfg.proxy.admin_listen and stack.proxy.admin_port:
            out["admin"] = _hostport_text(cfg.proxy.admin_listen, stack.proxy.admin_port)
    if stack.redirector is not None:
        out["redirector"] = _hostport_text(cfg.redirector.listen, stack.redirector.public_port)
        if cfg.redirector.https_listen and stack.redirector.https_port is not None:
            out["https"] = _hostport_text(cfg.redirector.https_listen, stack.redirector.https_port)
        if cfg.redirector.admin_listen and stack.redirector.admin_port:
            out["admin"] = _hostport_text(cfg.redirector.admin_listen, stack.redirector.admin_port)
    return out


def preflight_summary(stack: Stack) -> str | None:
    if stack.monitor is None:
        return None
    if not stack.config.preflight.enabled:
        return "preflight disabled: links are always rewritten"
    states = [f"{url} {stack.monitor.state(url)}" for url in stack.config.tracking.base_urls()]
    return "preflight: " + ", ".join(states)


def status_line(stack: Stack) -> str:
    """systemd's ``STATUS``: the listeners and the preflight verdicts, on one line."""
    parts = [f"{name} {addr}" for name, addr in listening(stack).items()]
    summary = preflight_summary(stack)
    if summary:
        parts.append(summary)
    return "; ".join(parts)


def banner(stack: Stack) -> list[str]:
    """A few lines for a person at a terminal: where it listens, where mail goes,
    how to change it."""
    cfg = stack.config
    bound = listening(stack)
    lines: list[str] = []
    if "smtp" in bound:
        lines.append(f"SMTP proxy      smtp://{bound['smtp']}  (send mail here)")
    if "smtps" in bound:
        lines.append(f"SMTPS           smtps://{bound['smtps']}")
    if stack.proxy is not None:
        maildir = cfg.maildir
        if maildir is not None:
            where = f"maildir {maildir}/new/ (a folder, nothing is really sent)"
        else:
            where = cfg.upstream.url
        lines.append(f"mail goes to    {where}")
        lines.append(f"tracked links   {cfg.tracking.base_url}/c/…")
        summary = preflight_summary(stack)
        if summary:
            lines.append(summary)
            if stack.monitor is not None and not all(
                stack.monitor.may_rewrite(url) for url in cfg.tracking.base_urls()
            ):
                lines.append(
                    "                (mail is relayed unrewritten until preflight passes:"
                    " run `clickrelay check`)"
                )
    if "redirector" in bound:
        lines.append(f"redirector      http://{bound['redirector']}  (clicks land here)")
    if "https" in bound:
        lines.append(f"redirector TLS  https://{bound['https']}  (certificate by SNI)")
    if "admin" in bound:
        lines.append(f"admin           http://{bound['admin']}/metrics")
    if stack.redirector is not None:
        lines.append(f"clicks stored   {cfg.redirector.store}  (see `clickrelay stats`)")
    lines.append(f"link keys       {cfg.tracking.key_file}")
    if cfg.source is None:
        lines.append(
            "configure       copy conf/clickrelay.toml, edit it, run "
            f"`clickrelay {stack.kind} -c FILE` (or set $CLICKRELAY_CONFIG)"
        )
    else:
        lines.append(f"config          {cfg.source}  (edit, then SIGHUP to reload)")
    return lines
