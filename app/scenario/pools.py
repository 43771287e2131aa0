"""Word pools and id makers for the scenario generator: plausible names, companies and vendor ids.

Everything here is deterministic given the caller's `random.Random`; nothing reads the clock.
E-mail domains use reserved or fictitious names (example.com style) so generated files never
name a real person's inbox, except the few public webmail domains duplicates are about (Gmail's
dots and plus-tags are part of the fault being modelled).
"""

from __future__ import annotations

import random
import uuid

FIRST_NAMES = (
    "Ava",
    "Liam",
    "Noah",
    "Emma",
    "Olivia",
    "Mia",
    "Lucas",
    "Ethan",
    "Sofia",
    "Amelia",
    "Mateo",
    "Isla",
    "Aria",
    "Leo",
    "Zoe",
    "Hugo",
    "Nora",
    "Jonas",
    "Lena",
    "Maya",
    "Omar",
    "Yara",
    "Ravi",
    "Priya",
    "Kenji",
    "Aiko",
    "Tomas",
    "Elena",
    "Marco",
    "Giulia",
    "Pierre",
    "Chloe",
    "Felix",
    "Hanna",
    "Lars",
    "Ingrid",
    "Diego",
    "Lucia",
    "Samir",
    "Leila",
    "Owen",
    "Grace",
    "Ruth",
    "Caleb",
    "Iris",
    "Jude",
    "Ada",
    "Ezra",
    "Clara",
    "Milo",
    "Rosa",
    "Ivan",
    "Nina",
    "Theo",
    "Vera",
    "Arjun",
    "Mei",
    "Tariq",
    "Anya",
    "Bruno",
)
LAST_NAMES = (
    "Smith",
    "Garcia",
    "Chen",
    "Patel",
    "Muller",
    "Rossi",
    "Novak",
    "Silva",
    "Kim",
    "Tanaka",
    "Dubois",
    "Jensen",
    "Kowalski",
    "Nguyen",
    "Haddad",
    "Okafor",
    "Larsen",
    "Moreau",
    "Fischer",
    "Costa",
    "Ibrahim",
    "Sato",
    "Lopez",
    "Brown",
    "Wilson",
    "Martin",
    "Keller",
    "Weber",
    "Schmidt",
    "Bauer",
    "Hughes",
    "Price",
    "Reyes",
    "Ortiz",
    "Varga",
    "Horvat",
    "Petrov",
    "Popescu",
    "Lindqvist",
    "Berg",
    "Quinn",
    "Walsh",
    "Murphy",
    "Byrne",
    "Adeyemi",
    "Mensah",
    "Cohen",
    "Levi",
    "Fontaine",
    "Marchetti",
)
COMPANY_STEMS = (
    "Acme",
    "Northwind",
    "Globex",
    "Initech",
    "Umbrella",
    "Vandelay",
    "Stark",
    "Wayne",
    "Tyrell",
    "Soylent",
    "Hooli",
    "Pied Piper",
    "Aperture",
    "Black Mesa",
    "Cyberdyne",
    "Gringotts",
    "Monarch",
    "Oscorp",
    "Wonka",
    "Blue Sun",
    "Nakatomi",
    "Massive Dynamic",
    "Sirius",
    "Prestige",
    "Dunder",
    "Bluth",
    "Krusty",
    "Duff",
    "Zenith",
    "Quantum",
    "Helix",
    "Vertex",
    "Lumen",
    "Orbit",
    "Cobalt",
    "Summit",
    "Atlas",
    "Polaris",
    "Redwood",
    "Silverline",
    "Brightpath",
    "Nimbus",
    "Kestrel",
    "Harbor",
    "Ironclad",
    "Meridian",
)
COMPANY_SUFFIXES = ("Inc", "LLC", "Ltd", "GmbH", "Corp", "Group", "Labs", "Systems", "Partners", "Co")
INDUSTRIES = (
    "Software",
    "Manufacturing",
    "Retail",
    "Healthcare",
    "Financial Services",
    "Logistics",
    "Education",
    "Media",
    "Energy",
    "Hospitality",
    "Construction",
    "Telecommunications",
)
TITLES = (
    "VP Sales",
    "Head of Marketing",
    "CTO",
    "Operations Manager",
    "Procurement Lead",
    "CFO",
    "Marketing Manager",
    "IT Director",
    "Account Executive",
    "Founder",
    "Product Manager",
    "Data Analyst",
    "Customer Success Manager",
    "Head of Growth",
    "Office Manager",
    "Engineering Manager",
)
CITIES = (
    "Boston",
    "Austin",
    "Denver",
    "Chicago",
    "Seattle",
    "Atlanta",
    "Toronto",
    "London",
    "Berlin",
    "Amsterdam",
    "Dublin",
    "Paris",
    "Madrid",
    "Lisbon",
    "Stockholm",
    "Zurich",
)
UTM_SOURCES = ("google", "google", "google", "facebook", "linkedin", "newsletter", "bing", "partner")
UTM_MEDIUMS = {
    "google": "cpc",
    "bing": "cpc",
    "facebook": "paid_social",
    "linkedin": "paid_social",
    "newsletter": "email",
    "partner": "referral",
}
CAMPAIGNS = (
    "spring_launch",
    "webinar_q2",
    "retargeting_eu",
    "brand_search",
    "ebook_crm_guide",
    "trial_push",
    "partner_week",
    "summit_followup",
)
CALL_SUBJECTS = (
    "Discovery call",
    "Demo",
    "Pricing discussion",
    "Follow-up call",
    "Technical deep dive",
    "Contract review",
    "Stakeholder meeting",
)
TICKET_SUBJECTS = (
    "Login problem",
    "Invoice question",
    "Export fails",
    "Password reset",
    "API error 500",
    "Billing address change",
    "Cannot add users",
    "Sync delayed",
)
WEBMAIL = ("gmail.com", "gmail.com", "outlook.com", "yahoo.com")


def company_name(rng: random.Random) -> str:
    """`Northwind Labs`, `Acme Inc`: a stem plus a suffix."""
    return f"{rng.choice(COMPANY_STEMS)} {rng.choice(COMPANY_SUFFIXES)}"


def domain_for(name: str, rng: random.Random) -> str:
    """A fictitious company domain under .example (RFC 2606 reserved)."""
    stem = "".join(ch for ch in name.lower() if ch.isalnum())[:18] or "company"
    return f"{stem}{rng.randrange(10, 99)}.example"


def email_for(first: str, last: str, domain: str, rng: random.Random, webmail_share: float = 0.2) -> str:
    """A person's address at the company domain, or (sometimes) at a webmail provider."""
    if rng.random() < webmail_share:
        domain = rng.choice(WEBMAIL)
        return f"{first.lower()}.{last.lower()}{rng.randrange(1, 999)}@{domain}"
    style = rng.random()
    if style < 0.6:
        local = f"{first.lower()}.{last.lower()}"
    elif style < 0.85:
        local = f"{first[0].lower()}{last.lower()}"
    else:
        local = f"{first.lower()}"
    return f"{local}@{domain}"


def phone_e164(rng: random.Random) -> str:
    """A US number in the 555-01xx fictional range, E.164 (`+12125550142`)."""
    area = rng.choice(("212", "415", "617", "312", "206", "512", "303", "404"))
    return f"+1{area}555{rng.randrange(100, 199):04d}"


def phone_formatted(e164: str, style: int) -> str:
    """The same number written the ways people type it: `(212) 555-0142`, `212.555.0142`, ..."""
    digits = e164[-10:]
    area, mid, last = digits[:3], digits[3:6], digits[6:]
    return (
        f"({area}) {mid}-{last}",
        f"{area}-{mid}-{last}",
        f"{area}.{mid}.{last}",
        f"+1 {area} {mid} {last}",
        f"1{area}{mid}{last}",
    )[style % 5]


def email_variant(email: str, style: int) -> str:
    """The same inbox spelled differently: case, plus-tag, Gmail dots, stray whitespace."""
    local, _, domain = email.partition("@")
    if style % 4 == 0:
        return f"{local.title()}@{domain.upper()}"
    if style % 4 == 1:
        return f"{local}+crm@{domain}"
    if style % 4 == 2 and domain == "gmail.com" and "." in local:
        return f"{local.replace('.', '')}@googlemail.com"
    if style % 4 == 2:
        return f"{local.upper()}@{domain}"
    return f" {local}@{domain.title()} "


def uuid4(rng: random.Random) -> str:
    """A version-4 UUID drawn from the generator's random stream (deterministic by seed)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def salesforce_id(prefix: str, number: int, pod: str = "5g") -> str:
    """An 18-character Salesforce id: 3-char key prefix, pod, base-62 counter, case-safe suffix."""
    body = ""
    n = number
    for _ in range(8):
        body = _B62[n % 62] + body
        n //= 62
    id15 = (prefix + pod + "00" + body)[:15]
    id15 = id15.ljust(15, "0")
    suffix = ""
    for chunk in range(3):
        bits = 0
        for i, ch in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << i
        suffix += _SUFFIX[bits]
    return id15 + suffix
