"""Parse cost per mail (runtime.mail.parse.parse_mail) on the benchmark corpus, and an EXPERIMENT: the same parse
with the stdlib's ``email.policy.compat32`` instead of ``email.policy.default`` (whose header registry re-parses
Content-Type and friends on every ``get_content_type()``/``get_filename()`` call), with a check that both give the
same ParsedMail for every mail of the corpus. Product code is not touched (the policy is swapped in memory).

    .venv/bin/python -m bench.parse_speed [--mails 2000]
"""
from __future__ import annotations

import argparse
import dataclasses
import email
import email.policy
import time
from typing import Any

from bench.common import command_line, machine_info, round_floats, write_result
from bench.corpus import realistic_mix


def timed_parse(raws: list[bytes]) -> tuple[float, list[Any]]:
    from runtime.mail.parse import parse_mail

    t0 = time.perf_counter()
    out = [parse_mail(r) for r in raws]
    return (time.perf_counter() - t0) / len(raws) * 1000, out


def outcomes(raws: list[bytes]) -> list[Any]:
    from runtime.errors import MailParseError
    from runtime.mail.parse import parse_mail

    out: list[Any] = []
    for raw in raws:
        try:
            out.append(dataclasses.asdict(parse_mail(raw)))
        except MailParseError as exc:
            out.append(f"MailParseError: {exc}")
        except Exception as exc:  # noqa: BLE001 - a crash is an outcome too
            out.append(f"CRASH {type(exc).__name__}: {exc}")
    return out


def main() -> None:
    import runtime.mail.parse as mp

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=2000)
    args = parser.parse_args()
    raws = [m.raw for m in realistic_mix(args.mails, "someone@localhost", seed=3)]
    default_ms, default_out = timed_parse(raws)
    original = email.message_from_bytes

    def compat_parse(raw: bytes, policy: Any = None) -> Any:
        return original(raw, policy=email.policy.compat32)

    try:  # the reliability tests' hostile corpus (tests/corpus.py), when present
        from tests.corpus import hostile_mails

        hostile = [m.raw for m in hostile_mails("someone@localhost", seed=1, generated=300)]
    except ImportError:
        hostile = []
    hostile_default = outcomes(hostile)
    mp.email.message_from_bytes = compat_parse  # type: ignore[attr-defined]
    try:
        compat_ms, compat_out = timed_parse(raws)
        hostile_compat = outcomes(hostile)
    finally:
        mp.email.message_from_bytes = original  # type: ignore[attr-defined]
    hostile_differ = sum(a != b for a, b in zip(hostile_default, hostile_compat))
    hostile_fields: dict[str, int] = {}
    for a, b in zip(hostile_default, hostile_compat):
        if a != b:
            keys = [k for k in a if a[k] != b[k]] if isinstance(a, dict) and isinstance(b, dict) else ["outcome"]
            for k in keys:
                hostile_fields[k] = hostile_fields.get(k, 0) + 1
    differ = [i for i, (a, b) in enumerate(zip(default_out, compat_out))
              if dataclasses.asdict(a) != dataclasses.asdict(b)]
    fields: dict[str, int] = {}
    for i in differ:
        a, b = dataclasses.asdict(default_out[i]), dataclasses.asdict(compat_out[i])
        for k in a:
            if a[k] != b[k]:
                fields[k] = fields.get(k, 0) + 1
    data = {"benchmark": "parse_speed", "command": command_line(), "machine": machine_info(), "mails": args.mails,
            "ms_per_mail_policy_default (product)": default_ms, "ms_per_mail_policy_compat32 (experiment)": compat_ms,
            "speedup": default_ms / compat_ms, "mails_with_a_different_result": len(differ),
            "differing_fields": fields, "hostile_mails_checked": len(hostile),
            "hostile_mails_with_a_different_outcome": hostile_differ, "hostile_differing_fields": hostile_fields}
    write_result("parse_speed", round_floats(data))
    print(f"parse_mail: {default_ms:.2f} ms/mail (policy.default, the product) vs {compat_ms:.2f} ms/mail "
          f"(compat32, experiment): {default_ms / compat_ms:.1f}x; results differ for {len(differ)} of "
          f"{args.mails} mails {fields}; hostile corpus: {hostile_differ} of {len(hostile)} differ {hostile_fields}")


if __name__ == "__main__":
    main()
