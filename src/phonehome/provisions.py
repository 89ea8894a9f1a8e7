"""The provisions a privacy test checks, for the labs and regulators that trace each verdict to one.

A test that records a phone's traffic and judges it (it used the ``traffic`` fixture and reached a phase) checks
that no device identifier leaves the phone unencrypted: the provisions below. The Allure reporter labels each such
test with them (label ``provision``, and a link to each text), the evidence manifest lists them per test, and
``docs/verdicts.md`` has the same table (a unit test keeps the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass

LABEL = "provision"


@dataclass(frozen=True)
class Provision:
    """One provision of a standard or test catalogue: its id as labs cite it, what it asks, where it is."""

    id: str
    title: str
    url: str


#: what a cleartext-identifier test checks, in the order a lab cites them
PRIVACY_PROVISIONS: tuple[Provision, ...] = (
    Provision("ETSI EN 303 645 5.8-1",
              "confidentiality of personal data transiting between the device and a service, with best practice "
              "cryptography (test group 5.8-1 of ETSI TS 103 701)",
              "https://www.etsi.org/deliver/etsi_en/303600_303699/303645/"),
    Provision("ETSI EN 303 645 5.8-2",
              "confidentiality of sensitive personal data communicated between the device and associated "
              "services (test group 5.8-2 of ETSI TS 103 701)",
              "https://www.etsi.org/deliver/etsi_en/303600_303699/303645/"),
    Provision("EN 18031-2 secure communication",
              "secure communication mechanisms of radio equipment processing personal data (Radio Equipment "
              "Directive 2014/53/EU, article 3(3)(e))",
              "https://eur-lex.europa.eu/eli/reg_del/2022/30/oj"),
    Provision("OWASP MASTG-TEST-0236",
              "cleartext traffic observed on the network (MASVS-NETWORK-1)",
              "https://mas.owasp.org/MASTG/tests/android/MASVS-NETWORK/MASTG-TEST-0236/"),
)


def provision_ids() -> tuple[str, ...]:
    return tuple(provision.id for provision in PRIVACY_PROVISIONS)


def markdown_table() -> str:
    """The table of docs/verdicts.md."""
    lines = ["| provision | what a phonehome privacy test checks against it |", "|---|---|"]
    lines.extend(f"| [{p.id}]({p.url}) | {p.title} |" for p in PRIVACY_PROVISIONS)
    return "\n".join(lines)
