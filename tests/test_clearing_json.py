"""ClearingResult.to_json_dict (without dataclasses.asdict's deep copy) gives the very
object, key order and JSON text of the asdict form, and reading keeps naming bad values."""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from flexcore.exchange.clearing import (
    FORMAT,
    VERSION,
    ClearingFileError,
    ClearingResult,
    Diagnosis,
    clearing_from_json_dict,
)


def _reference(res: ClearingResult) -> dict:
    d = asdict(res)
    d["status"] = res.status.value
    return {"format": FORMAT, "version": VERSION, **d}


@pytest.mark.parametrize("diagnosis", [None, Diagnosis(
    "no", max_deliverable_mw=1.5, binding_rows=["v:1"], base_violated_rows={"a=0": ["l:2"]},
    region_ranges=[["a=0", 0.0, 1.5]])])
def test_to_json_dict_is_the_asdict_form(diagnosis):
    res = ClearingResult(status="optimal", request_mw=1.0, delivered_mw=1.0,
                         cost_eur_per_h=12.5, objective=12.5, operating_point=0,
                         operating_point_label="a=0",
                         activation_mw={"b2": 0.25, "b1": 0.75},
                         predicted_vm_pu={"v:1": 1.01}, predicted_loading_percent={"l:2": 40.0},
                         backend="highs", diagnosis=diagnosis)
    d, ref = res.to_json_dict(), _reference(res)
    assert d == ref and list(d) == list(ref)
    assert json.dumps(d, indent=1) == json.dumps(ref, indent=1)
    d["activation_mw"]["b1"] = 0.0  # a copy: the result keeps its numbers
    assert res.activation_mw["b1"] == 0.75
    back = clearing_from_json_dict(json.loads(json.dumps(ref)))
    assert back.activation_mw == res.activation_mw and list(back.activation_mw) == ["b2", "b1"]


@pytest.mark.parametrize("bad, why", [(float("nan"), "nan"), ("x", "'x'"), (True, "True")])
def test_reading_names_a_bad_number(bad, why):
    res = ClearingResult(status="optimal", request_mw=1.0, delivered_mw=1.0,
                         cost_eur_per_h=1.0, operating_point=0, operating_point_label="a=0",
                         activation_mw={"b1": 1.0, "b2": 0.0})
    d = res.to_json_dict()
    d["activation_mw"]["b2"] = bad
    with pytest.raises(ClearingFileError, match=f"activation_mw.b2' must be a finite number, "
                                                f"got {why}"):
        clearing_from_json_dict(d)
    d["activation_mw"]["b2"] = 0  # an int is a number
    assert clearing_from_json_dict(d).activation_mw == {"b1": 1.0, "b2": 0.0}
