"""``accounts``: the park broker's accounts (one per device) and the ACL made from them.

Read from the files only (no broker connection): the accounts file is valid; the ACL file is
there and says what the accounts file says; every account has a password entry; the ACL is
enforced; every account has a device in the config (or was heard); and, before as after
enforcing, each publisher the ACL refuses: devices the gateway has heard (its state registry)
without an account or outside their account's topics, and subscriptions no account may publish
on. That last list is the migration's check at a running park: empty, `devices enforce` is safe.
"""

from __future__ import annotations

from gateway.config import Config
from gateway.ops.accounts import (
    Accounts,
    AccountsError,
    Files,
    Heard,
    PasswordFile,
    heard_devices,
    load_accounts,
    refused_publishers,
)
from gateway.ops.doctor.runner import Result

CHECK = "accounts"


def check_accounts(cfg: Config) -> list[Result]:
    files = Files.of(cfg.broker)
    if not files.accounts.exists():
        enforced = files.enforce.exists()
        return [Result(CHECK, "broker accounts", "FAIL" if enforced else "WARN",
                       f"no accounts file {files.accounts}: every device may publish "
                       "anywhere" if not enforced else
                       f"no accounts file {files.accounts}, but the ACL is enforced",
                       "`sudo garden-gateway devices import` makes one from the password "
                       "file; then doctor again, then `sudo garden-gateway devices enforce`")]
    try:
        accounts = load_accounts(files.accounts)
        passwd = PasswordFile.read(files.passwd)
    except AccountsError as exc:
        return [Result(CHECK, "broker accounts", "FAIL", str(exc),
                       "fix the file (or run doctor with sudo)")]
    heard = heard_devices(cfg.data_dir)
    results = [_acl(files, accounts), _passwords(accounts, passwd, files),
               _enforced(files), _without_device(cfg, accounts, heard)]
    problems = refused_publishers(cfg, accounts, heard)
    enforced = files.enforce.exists()
    if problems:
        verb = "refuses" if enforced else "would refuse"
        results.append(Result(
            CHECK, "publishers", "WARN",
            f"the ACL {verb} {len(problems)} publisher{'s' if len(problems) != 1 else ''}",
            "give each an account (`garden-gateway devices add ID --kind ...` or `devices "
            "import --kind ID=KIND`)" + ("" if enforced else ", then `devices enforce`"),
            tuple(problems)))
    else:
        seen = "no heard devices yet" if not heard else f"{len(heard)} heard devices"
        results.append(Result(CHECK, "publishers", "OK",
                              f"every publisher has an account that allows it ({seen})"))
    return results


def _acl(files: Files, accounts: Accounts) -> Result:
    try:
        text = files.acl.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Result(CHECK, "ACL file", "FAIL", f"{files.acl} is missing",
                      "`sudo garden-gateway devices sync` writes it")
    except OSError as exc:
        return Result(CHECK, "ACL file", "WARN", f"cannot read {files.acl}: {exc.strerror}",
                      "run doctor with sudo")
    if text != accounts.render_acl():
        return Result(CHECK, "ACL file", "FAIL",
                      f"{files.acl} does not say what {files.accounts} says",
                      "`sudo garden-gateway devices sync` rewrites it (never edit it by hand)")
    return Result(CHECK, "ACL file", "OK",
                  f"{files.acl} matches the {len(accounts.accounts)} accounts")


def _passwords(accounts: Accounts, passwd: PasswordFile, files: Files) -> Result:
    users = passwd.users()
    missing = [a for a in accounts.accounts if a not in users]
    extra = [u for u in users if u not in accounts.accounts]
    if missing:
        gateway = [a.id for a in accounts.accounts.values() if a.kind == "gateway"]
        fix = "`sudo garden-gateway devices add ID --kind ... --replace` gives a device a password"
        if set(missing) & set(gateway):
            fix = (f"the gateway's: `sudo mosquitto_passwd {files.passwd} {gateway[0]}` with "
                   "GARDEN_GATEWAY_MQTT__PASSWORD of secrets.env (install.sh does it); " + fix)
        n = len(missing)
        return Result(CHECK, "passwords", "FAIL",
                      f"{n} account{'s have' if n != 1 else ' has'} no password in "
                      f"{files.passwd}: {'they' if n != 1 else 'it'} cannot log in", fix,
                      tuple(missing))
    if extra:
        return Result(CHECK, "passwords", "WARN",
                      f"{len(extra)} user(s) in {files.passwd} without an account: they can log "
                      "in but the ACL lets them publish nothing",
                      "`sudo garden-gateway devices import` (or `devices remove ID`)",
                      tuple(extra))
    return Result(CHECK, "passwords", "OK", f"every account has a password in {files.passwd}")


def _enforced(files: Files) -> Result:
    if files.enforce.exists():
        return Result(CHECK, "ACL enforced", "OK", f"{files.enforce} names the ACL")
    return Result(CHECK, "ACL enforced", "WARN",
                  f"not enforced ({files.enforce} is absent): any account may publish anywhere, "
                  "as any device", "when 'publishers' below is OK: `sudo garden-gateway devices "
                  "enforce`")


def _without_device(cfg: Config, accounts: Accounts, heard: list[Heard] | None) -> Result:
    configured = {d.id for d in cfg.devices}
    heard_ids = {d.id for d in heard or ()}
    lonely = [a.id for a in accounts.devices()
              if a.kind != "topics" and a.id not in configured and a.id not in heard_ids]
    if lonely:
        return Result(CHECK, "accounts without a device", "WARN",
                      f"{len(lonely)} accounts match no device in the config and none heard",
                      "a typo in the id? add the device to devices:, or `garden-gateway devices "
                      "remove ID`", tuple(lonely))
    return Result(CHECK, "accounts without a device", "OK",
                  "every device account matches a device of the config or one heard")
