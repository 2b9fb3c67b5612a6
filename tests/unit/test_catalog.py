from pathlib import Path

import pytest
import yaml

from dynoyard.domain.catalog import CatalogError, parse_catalog

ROOT = Path(__file__).resolve().parents[2]


def base(**model_overrides):
    return {
        "providers": {"p": {"base_url": "http://127.0.0.1:1/v1", "api_key_env": "P_KEY"}},
        "models": [
            {
                "id": "m1",
                "provider": "p",
                "upstream": "u1",
                "price": {"input_per_mtok": "1", "output_per_mtok": "2"},
                **model_overrides,
            }
        ],
    }


def test_given_the_shipped_catalog_when_parsed_then_it_is_valid_and_names_every_provider():
    data = yaml.safe_load((ROOT / "config" / "models.yaml").read_text())
    catalog = parse_catalog(data, environ={}, key_available=lambda name: True)
    providers = {m.provider.name for m in catalog.offered()}
    assert {
        "openai",
        "deepseek",
        "moonshot",
        "groq",
        "together",
        "openrouter",
        "ollama",
        "demo",
    } <= providers
    assert all(m.price.input_per_mtok >= 0 for m in catalog.offered())


def test_given_no_provider_keys_when_parsed_then_only_the_demo_is_offered():
    data = yaml.safe_load((ROOT / "config" / "models.yaml").read_text())
    catalog = parse_catalog(data, environ={"DYNOYARD_DEMO_API_KEY": "demo"})
    assert {m.id for m in catalog.offered()} == {"dynoyard-demo", "dynoyard-demo-embed"}
    assert catalog.get("gpt-4o-mini") is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"provider": "missing"}, "models[0] (id 'm1'): provider 'missing' is not defined"),
        ({"price": {"input_per_mtok": "abc"}}, "models[0] (id 'm1'): price.input_per_mtok"),
        ({"price": {"input_per_mtok": 0.15}}, "float"),
        ({"price": {"input_per_mtok": "-1"}}, "negative"),
        ({"fallbacks": ["nope"]}, "fallback 'nope' is not in the catalog"),
        ({"kind": "image"}, "models[0] (id 'm1'): kind"),
    ],
)
def test_given_a_bad_entry_when_parsed_then_the_error_names_it(overrides, message):
    with pytest.raises(
        CatalogError,
        match=message.replace("(", r"\(")
        .replace(")", r"\)")
        .replace("[", r"\[")
        .replace("]", r"\]"),
    ):
        parse_catalog(base(**overrides), environ={"P_KEY": "x"})


def test_given_a_duplicate_id_when_parsed_then_it_is_refused():
    data = base()
    data["models"].append(dict(data["models"][0]))
    with pytest.raises(CatalogError, match=r"models\[1\] \(id 'm1'\): duplicate"):
        parse_catalog(data, environ={"P_KEY": "x"})


def test_given_env_references_when_parsed_then_they_expand_with_defaults():
    data = base()
    data["providers"]["p"]["base_url"] = "${HOST_URL:-http://localhost:1}/v1"
    catalog = parse_catalog(data, environ={"P_KEY": "x"})
    assert catalog.get("m1").provider.base_url == "http://localhost:1/v1"
    catalog = parse_catalog(data, environ={"P_KEY": "x", "HOST_URL": "http://h:2"})
    assert catalog.get("m1").provider.base_url == "http://h:2/v1"


def test_given_fallbacks_when_routed_then_available_ones_follow_in_order():
    data = base(fallbacks=["m2", "m3"])
    data["providers"]["q"] = {"base_url": "http://127.0.0.1:2/v1", "api_key_env": "Q_KEY"}
    for mid, provider in (("m2", "q"), ("m3", "p")):
        data["models"].append(
            {"id": mid, "provider": provider, "upstream": mid, "price": {"input_per_mtok": "1"}}
        )
    catalog = parse_catalog(data, environ={"P_KEY": "x"})  # q has no key
    assert [m.id for m in catalog.route(catalog.get("m1"), lambda _: True)] == ["m1", "m3"]


def test_given_a_key_limited_to_one_model_when_routed_then_no_fallback_goes_elsewhere():
    data = base(fallbacks=["m2"])
    data["models"].append(
        {"id": "m2", "provider": "p", "upstream": "m2", "price": {"input_per_mtok": "1"}}
    )
    catalog = parse_catalog(data, environ={"P_KEY": "x"})
    allowed = {"m1"}.__contains__
    assert [m.id for m in catalog.route(catalog.get("m1"), allowed)] == ["m1"]
