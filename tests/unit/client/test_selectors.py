import pytest

from nodeagent.client.selectors import (
    SelectorError,
    field_matcher,
    labels_match,
    parse_label_selector,
    selector_from_dict,
)
from nodeagent.machinery.kinds import EVENTS, PODS


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "db"}, False),
        ("app!=web", {"app": "db"}, True),
        ("app!=web", {}, True),
        ("env in (prod, staging)", {"env": "prod"}, True),
        ("env in (prod, staging)", {"env": "dev"}, False),
        ("env notin (prod)", {}, True),
        ("env notin (prod)", {"env": "prod"}, False),
        ("tier", {"tier": "x"}, True),
        ("!tier", {"tier": "x"}, False),
        ("app=web,env in (a,b),!canary", {"app": "web", "env": "b"}, True),
        ("app=web,env in (a,b),!canary", {"app": "web", "env": "b", "canary": "1"}, False),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert labels_match(parse_label_selector(selector), labels) is expected


def test_bad_label_selector_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_label_selector("a in b")


def test_selector_from_match_expressions() -> None:
    reqs = selector_from_dict({"app": "web"}, [{"key": "env", "operator": "NotIn", "values": ["dev"]}])
    assert labels_match(reqs, {"app": "web", "env": "prod"})
    assert not labels_match(reqs, {"app": "web", "env": "dev"})


def test_field_selector() -> None:
    match = field_matcher(PODS, "spec.nodeName=n1,status.phase!=Failed")
    assert match({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    assert not match({"spec": {"nodeName": "n2"}, "status": {"phase": "Running"}})
    assert not match({"spec": {"nodeName": "n1"}, "status": {"phase": "Failed"}})
    assert field_matcher(PODS, "spec.nodeName=")({"spec": {}})
    assert field_matcher(EVENTS, "involvedObject.uid=u")({"involvedObject": {"uid": "u"}})
    with pytest.raises(SelectorError):
        field_matcher(PODS, "spec.containers=x")  # as the apiserver: unsupported field
