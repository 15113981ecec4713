"""runtime/kinds.py, plain (no servers): a registry refuses a name claimed twice, naming both claimants; kinds are
loaded from the built-ins and entry points."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from runtime.errors import ConfigError
from runtime.kinds import Kind, KindConflict, Registry, Services, load_kinds


class Echo(Kind):
    name = "echo"

    def setup(self, registry: Registry, services: Services) -> None:
        registry.add_procedure("createIntegration", lambda envelope: "echo")
        registry.add_procedure("listen", lambda envelope: None, plain=True)
        registry.add_routes(["/echo/receive"], lambda deps, config: [("/echo/receive", object, {})])
        registry.add_query("echoDetail", "field")
        registry.add_listener(lambda doc, **kw: None, integrations=SimpleNamespace())


def kind(name: str, setup) -> Kind:
    return type(name.title(), (Kind,), {"name": name, "setup": lambda self, registry, services: setup(registry)})()


SERVICES = Services(config=None)


def test_a_kind_s_claims_are_named_by_the_kind():
    registry = Registry()
    registry.setup(Echo(), SERVICES)
    assert list(registry.procedures_of("echo")) == ["echo:createIntegration"]
    assert list(registry.procedures_of("echo", plain=True)) == ["echo:listen"]
    assert [patterns for patterns, _build in registry.route_builders()] == [["/echo/receive"]]
    assert registry.graphql_fields() == ({"echoDetail": "field"}, {})
    assert list(registry.listeners) == ["echo"]
    assert Echo().service_config(SimpleNamespace(mongo_url="mongodb://x/db"))["meta"]["inboxIntegrations"] == [
        {"kind": "echo", "label": "echo"}]


@pytest.mark.parametrize("claim, what, name", [
    (lambda r: r.add_routes(["/echo/receive"], lambda d, c: []), "the route", "/echo/receive"),
    (lambda r: r.add_query("echoDetail", "other"), "the GraphQL field", "echoDetail"),
    (lambda r: r.add_mutation("echoDetail", "other"), "the GraphQL field", "echoDetail"),
    (lambda r: r.add_procedure("echo:createIntegration", lambda e: None), "the procedure", "echo:createIntegration"),
    (lambda r: r.add_procedure("echo:listen", lambda e: None), "the procedure", "echo:listen"),
])
def test_a_name_claimed_twice_is_refused_naming_both_claimants(claim, what, name):
    registry = Registry()
    registry.setup(Echo(), SERVICES)
    with pytest.raises(KindConflict) as caught:
        registry.setup(kind("other", claim), SERVICES)
    assert caught.value.what == what and caught.value.name == name
    assert caught.value.claimants == ("echo", "other")
    assert "'echo'" in str(caught.value) and "'other'" in str(caught.value)


def test_one_listener_per_kind_and_one_kind_per_name():
    registry = Registry()
    registry.setup(Echo(), SERVICES)
    with pytest.raises(KindConflict, match="listener"):
        registry.add_listener(lambda doc, **kw: None, integrations=None, kind="echo")
    with pytest.raises(KindConflict, match="kind name 'echo'"):
        registry.setup(Echo(), SERVICES)


def test_a_claim_outside_a_setup_must_name_its_kind():
    with pytest.raises(ConfigError):
        Registry().add_query("x", "field")


def test_kinds_come_from_the_built_ins_and_entry_points():
    point = SimpleNamespace(name="echo", value="tests.runtime.test_kinds:Echo", load=lambda: Echo)
    kinds = load_kinds(["imap", "echo"], entry_points=[point])
    assert [k.name for k in kinds] == ["imap", "echo"]
    with pytest.raises(ConfigError, match="no kind 'nope'"):
        load_kinds(["nope"], entry_points=[])
    clash = SimpleNamespace(name="imap", value="elsewhere:Imap", load=lambda: Echo)
    with pytest.raises(KindConflict, match="imap"):
        load_kinds(["imap"], entry_points=[clash])
    misnamed = SimpleNamespace(name="other", value="tests.runtime.test_kinds:Echo", load=lambda: Echo)
    with pytest.raises(ConfigError, match="calls itself 'echo'"):
        load_kinds(["other"], entry_points=[misnamed])
