"""The vendors' default deal pipelines: the stage order stage_anomaly ships with.

Every account starts with these; a team with its own pipelines lists them in the policy file
(`detectors.stage_anomaly.pipelines.<vendor>.<pipeline id>`), which overrides or extends these by
pipeline id. Stage values are the ones the change stream carries: HubSpot internal stage ids,
Salesforce StageName picklist values, Pipedrive stage ids.

* HubSpot: the pipeline with id `default` (`appointmentscheduled` ... `contractsent`, then
  `closedwon` / `closedlost`), field `dealstage`, pipeline field `pipeline`.
* Salesforce: the default Opportunity StageName picklist, field `StageName` (one order per org;
  sales processes that use a subset keep the same relative order).
* Pipedrive: the first pipeline (id 1) with stages 1-5 (Lead In, Contact Made, Demo Scheduled,
  Proposal Made, Negotiations Started), field `stage_id`, pipeline field `pipeline_id`. Won and
  lost are not stages in Pipedrive but the deal's `status` (`won`, `lost`, `open`).
"""

from __future__ import annotations

from detectors.settings import PipelineSpec, StageAnomalySettings

STAGE_FIELDS: dict[str, str] = {"hubspot": "dealstage", "salesforce": "StageName", "pipedrive": "stage_id"}
PIPELINE_FIELDS: dict[str, str] = {"hubspot": "pipeline", "pipedrive": "pipeline_id"}
STATUS_FIELDS: dict[str, tuple[str, frozenset[str], frozenset[str]]] = {
    "pipedrive": ("status", frozenset({"won"}), frozenset({"lost"})),
}
"""Vendors where closing is a status change: field, won values, lost values."""

PIPEDRIVE_STAGE_NAMES = ("Lead In", "Contact Made", "Demo Scheduled", "Proposal Made", "Negotiations Started")

DEFAULT_PIPELINES: dict[str, dict[str, PipelineSpec]] = {
    "hubspot": {
        "default": PipelineSpec(
            stages=[
                "appointmentscheduled",
                "qualifiedtobuy",
                "presentationscheduled",
                "decisionmakerboughtin",
                "contractsent",
            ],
            won=["closedwon"],
            lost=["closedlost"],
        ),
    },
    "salesforce": {
        "default": PipelineSpec(
            stages=[
                "Prospecting",
                "Qualification",
                "Needs Analysis",
                "Value Proposition",
                "Id. Decision Makers",
                "Perception Analysis",
                "Proposal/Price Quote",
                "Negotiation/Review",
            ],
            won=["Closed Won"],
            lost=["Closed Lost"],
        ),
    },
    "pipedrive": {
        "1": PipelineSpec(stages=["1", "2", "3", "4", "5"]),
    },
}


def stage_field(settings: StageAnomalySettings, vendor: str) -> str | None:
    """The deal-stage field of a vendor: the policy's `stage_fields`, else the shipped one."""
    return settings.stage_fields.get(vendor) or STAGE_FIELDS.get(vendor)


def stage_value(value: object) -> str:
    """A stage value as the orders index it: text, trimmed, at most 64 characters, casefolded."""
    return str(value).strip()[:64].casefold()


class StageOrder:
    """One pipeline, indexed for lookups: open-stage positions and closed values (casefolded)."""

    __slots__ = ("pipeline", "positions", "won", "lost")

    def __init__(self, pipeline: str, spec: PipelineSpec) -> None:
        self.pipeline = pipeline
        self.positions = {s.casefold(): i for i, s in enumerate(spec.stages)}
        self.won = frozenset(s.casefold() for s in spec.won)
        self.lost = frozenset(s.casefold() for s in spec.lost)

    def knows(self, value: str) -> bool:
        return value in self.positions or value in self.won or value in self.lost

    def closed(self, value: str) -> str | None:
        """`won`, `lost` or None."""
        if value in self.won:
            return "won"
        if value in self.lost:
            return "lost"
        return None

    def rank(self, value: str) -> int | None:
        """How far along the pipeline a stage is: open stages in order, then won and lost alike
        (closing is the end of the road either way); None for a value this pipeline lacks."""
        position = self.positions.get(value)
        if position is not None:
            return position
        if value in self.won or value in self.lost:
            return len(self.positions)
        return None


_ORDERS: dict[int, tuple[StageAnomalySettings, dict[str, list[StageOrder]]]] = {}


def orders_for(settings: StageAnomalySettings, vendor: str) -> list[StageOrder]:
    """The vendor's pipelines (policy first, then shipped defaults not overridden), cached per settings."""
    held = _ORDERS.get(id(settings))
    if held is None or held[0] is not settings:
        built: dict[str, list[StageOrder]] = {}
        for name in set(DEFAULT_PIPELINES) | set(settings.pipelines):
            merged = {**DEFAULT_PIPELINES.get(name, {}), **settings.pipelines.get(name, {})}
            own = list(settings.pipelines.get(name, {}))
            ordered = own + [p for p in merged if p not in own]
            built[name] = [StageOrder(p, merged[p]) for p in ordered]
        if len(_ORDERS) > 32:
            _ORDERS.clear()
        held = (settings, built)
        _ORDERS[id(settings)] = held
    return held[1].get(vendor, [])


def resolve(
    settings: StageAnomalySettings, vendor: str, pipeline: str | None, before: str | None, after: str
) -> StageOrder | None:
    """The pipeline a move happened in: the deal's own when known, else the first that knows both stages."""
    orders = orders_for(settings, vendor)
    if pipeline is not None:
        for order in orders:
            if order.pipeline == pipeline:
                return order if order.knows(after) else None
    for order in orders:
        if order.knows(after) and (before is None or order.knows(before)):
            return order
    return None


def progress(
    settings: StageAnomalySettings, vendor: str, pipeline: str | None, before: str, after: str
) -> int | None:
    """Direction of a move from stage `before` to `after` (casefolded, see `stage_value`): 1 further
    along the pipeline (closing included), -1 back (reopening included), 0 the same rank (e.g. won
    to lost), None when no pipeline knows both stages."""
    order = resolve(settings, vendor, pipeline, before, after)
    if order is None:
        return None
    a, b = order.rank(before), order.rank(after)
    if a is None or b is None:
        return None
    return (b > a) - (b < a)
