"""The starter rule set that ``leadflow init`` installs: sensible for a B2B seller.

Two groups, each capped at 50 so that no single kind of evidence qualifies a
lead alone: *fit* (who is asking: company address, phone, decision-maker,
size) and *intent* (what they ask: budget, timeline, demo or pricing, asking
again). A disposable address disqualifies. The threshold is 50.

The worked example (Sarah, IT manager at Tech Innovators Inc., company
address, phone, ~40 users, "buy within three months") earns fit 50 and intent
20: 70, qualified.
"""

from leadflow.scoring.conditions import parse_condition
from leadflow.scoring.rules import DEFAULT_THRESHOLD, RuleSet, validate_rule

STARTER_THRESHOLD = DEFAULT_THRESHOLD
STARTER_GROUPS = {"fit": 50, "intent": 50}

DECISION_MAKER_WORDS = (
    "ceo, cto, cfo, coo, cio, cmo, chief, founder, co-founder, owner, president, vp, "
    "vice president, head, director, manager, lead, partner, principal, "
    "directeur, eigenaar, bedrijfsleider, geschaftsfuhrer, leiter, inhaber, gerant, responsable"
)
DEMO_PRICING_WORDS = (
    "demo, demonstration, pricing, price, prices, quote, quotation, proposal, trial, "
    "offerte, prijs, prijzen, demonstratie, angebot, preis, preise, devis, tarif, tarifs"
)

_STARTER = [
    # name, group, points or verdict, conditions (text form), match, description
    ("disposable-address", None, "disqualify", ["domain_class = disposable"], "all",
     "A throw-away address: nobody to sell to."),
    ("company-domain", "fit", 15, ["domain_class = company"], "all",
     "Writes from a company domain."),
    ("free-mail", "fit", -10, ["domain_class = free"], "all",
     "Writes from a free-mail address (Gmail, Outlook...)."),
    ("phone-given", "fit", 10, ["phone exists"], "all",
     "Left a phone number."),
    ("decision-maker", "fit", 15, [f"title contains {DECISION_MAKER_WORDS}"], "all",
     "The title says they decide or manage."),
    ("team-size", "fit", 10, ["signals.size >= 20", "organisation.employees >= 20"], "any",
     "About 20 seats or people or more."),
    ("budget-mentioned", "intent", 15, ["signals.budget exists"], "all",
     "Mentions a budget."),
    ("timeline-3-months", "intent", 20, ["signals.timeline within 3m"], "all",
     "Wants to buy within three months."),
    ("demo-or-pricing", "intent", 15, [f"text contains {DEMO_PRICING_WORDS}"], "all",
     "Asks for a demo, a price or a quote."),
    ("repeat-inquiry", "intent", 10, ["inquiry_count >= 2"], "all",
     "Asked more than once."),
]


def starter_rules():
    """The starter rules as validated :class:`Rule` objects (no ids yet)."""
    rules = []
    for name, group, outcome, when, match, description in _STARTER:
        data = {"name": name, "group": group, "match": match, "description": description,
                "conditions": [parse_condition(text) for text in when]}
        if outcome == "disqualify":
            data["verdict"] = "disqualify"
        else:
            data["points"] = outcome
        rules.append(validate_rule(data))
    return rules


def starter_ruleset():
    """The starter rules as a :class:`RuleSet` (version None: not stored)."""
    return RuleSet(starter_rules(), STARTER_THRESHOLD, STARTER_GROUPS)
