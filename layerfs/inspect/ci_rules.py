"""dive's CI rules, read as dive reads them, so a project swaps dive for layerfs unchanged.

A `.dive-ci` file (YAML) holds
    rules:
      lowest-efficiency: 0.95           # fail below this efficiency
      highest-wasted-bytes: 20MB        # fail above this many wasted bytes
      highest-user-wasted-percent: 0.2  # fail above this ratio of wasted to user bytes
any of them `disabled`. dive's defaults apply to a rule no file or flag sets: 0.9,
disabled, 0.1. Sizes are read as go-humanize's ParseBytes reads them (MB = 1000^2,
MiB = 1024^2), without its thousands separators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from layerfs.errors import BadInput
from layerfs.inspect.analyze import Analysis

LOWEST_EFFICIENCY = "lowest-efficiency"
HIGHEST_WASTED_BYTES = "highest-wasted-bytes"
HIGHEST_USER_WASTED_PERCENT = "highest-user-wasted-percent"
DISABLED = "disabled"
DEFAULTS = {LOWEST_EFFICIENCY: "0.9", HIGHEST_WASTED_BYTES: DISABLED, HIGHEST_USER_WASTED_PERCENT: "0.1"}

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2,
          "gi": 1024**3, "gib": 1024**3, "ti": 1024**4, "tib": 1024**4}


def parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise BadInput(f"invalid size {text!r}: use a number with an optional unit (20MB, 1.5GiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_ratio(text: str, rule: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"invalid value {text!r} for {rule}: use a number between 0 and 1, or disabled") from None
    if not 0.0 <= value <= 1.0:
        raise BadInput(f"invalid value {text!r} for {rule}: use a number between 0 and 1, or disabled")
    return value


def read_config(path: Path) -> dict[str, str]:
    """The rules a dive CI file sets, as text."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_bytes())
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise BadInput(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    rules = (doc or {}).get("rules") if isinstance(doc, dict) else None
    if rules is None:
        return {}
    if not isinstance(rules, dict):
        raise BadInput(f"{path}: `rules` must be a mapping of rule names to values")
    unknown = sorted(str(key) for key in rules if key not in DEFAULTS)
    if unknown:
        raise BadInput(f"{path}: unknown rule {unknown[0]!r} (known: {', '.join(DEFAULTS)})")
    return {key: str(value) for key, value in rules.items()}


@dataclass
class RuleResult:
    rule: str
    status: str      # "pass", "fail" or "skip" (disabled)
    message: str

    def to_json(self) -> dict[str, str]:
        return {"rule": self.rule, "status": self.status, "message": self.message}


def evaluate(analysis: Analysis, settings: dict[str, str]) -> list[RuleResult]:
    """Each rule against the analysis; `settings` are the texts (defaults fill the rest)."""
    rules = dict(DEFAULTS, **settings)
    results = []
    for rule in DEFAULTS:
        text = rules[rule].strip()
        if text.lower() == DISABLED:
            results.append(RuleResult(rule, "skip", "disabled"))
            continue
        if rule == LOWEST_EFFICIENCY:
            limit = parse_ratio(text, rule)
            ok = analysis.efficiency >= limit
            message = f"image efficiency {analysis.efficiency:.4f} {'>=' if ok else '<'} threshold {limit}"
        elif rule == HIGHEST_WASTED_BYTES:
            limit_bytes = parse_bytes(text)
            ok = analysis.wasted <= limit_bytes
            message = f"wasted bytes {analysis.wasted} {'<=' if ok else '>'} threshold {limit_bytes}"
        else:
            limit = parse_ratio(text, rule)
            ok = analysis.user_wasted_ratio <= limit
            message = (f"wasted bytes over user bytes {analysis.user_wasted_ratio:.4f} "
                       f"{'<=' if ok else '>'} threshold {limit}")
        results.append(RuleResult(rule, "pass" if ok else "fail", message))
    return results
