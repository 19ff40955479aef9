"""CNI_ARGS parsing: libcni's LoadArgs rules, plus Multus's comma list."""

import pytest

from multihome.lib import cniargs
from multihome.lib.errors import CNIError

IP_KEYS = frozenset({"IP", "MAC", "GATEWAY"})


def test_empty_is_empty() -> None:
    assert cniargs.parse("") == {}


def test_pairs_are_split() -> None:
    assert cniargs.parse("IP=10.1.1.5;MAC=c2:11:22:33:44:55", IP_KEYS) == {
        "IP": "10.1.1.5",
        "MAC": "c2:11:22:33:44:55",
    }


def test_multus_args_with_ignore_unknown() -> None:
    raw = (
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
        "K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=1234;SOMETHING_NEW=1"
    )
    args = cniargs.parse(raw, IP_KEYS)
    assert args["K8S_POD_NAME"] == "web-0"
    assert args["SOMETHING_NEW"] == "1"


def test_pod_keys_are_known_without_ignore_unknown() -> None:
    assert cniargs.parse("K8S_POD_NAME=web-0")["K8S_POD_NAME"] == "web-0"


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(CNIError) as err:
        cniargs.parse("FOO=bar", IP_KEYS)
    assert err.value.code == 4
    assert "FOO" in err.value.msg


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "True"])
def test_ignore_unknown_booleans(value: str) -> None:
    assert cniargs.parse(f"IgnoreUnknown={value};FOO=bar")["FOO"] == "bar"


@pytest.mark.parametrize("value", ["0", "false", "FALSE"])
def test_ignore_unknown_false(value: str) -> None:
    with pytest.raises(CNIError):
        cniargs.parse(f"IgnoreUnknown={value};FOO=bar")


def test_ignore_unknown_not_a_boolean() -> None:
    with pytest.raises(CNIError) as err:
        cniargs.parse("IgnoreUnknown=maybe")
    assert err.value.code == 4


@pytest.mark.parametrize("raw", ["IP", "=1.2.3.4", "IP=1=2"])
def test_invalid_pairs(raw: str) -> None:
    with pytest.raises(CNIError) as err:
        cniargs.parse(raw, IP_KEYS)
    assert err.value.code == 4
    assert "CNI_ARGS" in err.value.msg


def test_trailing_separator_is_tolerated() -> None:
    assert cniargs.parse("IP=10.0.0.5;", IP_KEYS) == {"IP": "10.0.0.5"}


def test_multus_dual_stack_ip_list() -> None:
    args = cniargs.parse("IgnoreUnknown=1;IP=10.1.1.5/24,2001:db8::5/64", IP_KEYS)
    assert cniargs.split_list(args["IP"]) == ["10.1.1.5/24", "2001:db8::5/64"]


def test_split_list_drops_blanks() -> None:
    assert cniargs.split_list(" 10.0.0.1 , ,2001:db8::1") == ["10.0.0.1", "2001:db8::1"]
