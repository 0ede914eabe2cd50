"""The root key in shares: any threshold of them, in any order, and never fewer or wrong."""

from __future__ import annotations

import base64
import itertools
from pathlib import Path

import pytest

from eventstore import UnsealError, new_key
from eventstore.keyring import Keyring
from eventstore.shamir import SHARE_SIZE, Unsealing, decode_share, split_key


def test_any_three_of_five_in_any_order_make_the_key() -> None:
    key = new_key()
    shares = split_key(key, 5, 3)
    assert len(shares) == 5 and all(len(s) == SHARE_SIZE for s in shares)
    for chosen in itertools.permutations(shares, 3):
        unsealing = Unsealing(3)
        assert unsealing.add(chosen[0]) is None and unsealing.progress == 1
        assert unsealing.add(chosen[1]) is None and unsealing.progress == 2
        assert unsealing.add(chosen[2]) == key
        assert unsealing.progress == 0  # it starts over


def test_too_few_or_repeated_shares_are_never_combined() -> None:
    shares = split_key(new_key(), 5, 3)
    unsealing = Unsealing(3)
    assert unsealing.add(shares[0]) is None
    assert unsealing.add(shares[0]) is None  # the same share twice counts once
    assert unsealing.add(shares[1]) is None
    assert unsealing.progress == 2


def test_a_wrong_share_makes_a_key_the_keyring_refuses(tmp_path: Path) -> None:
    key = new_key()
    Keyring.create().save(tmp_path, key)
    shares = split_key(key, 5, 3)
    wrong = bytes([shares[2][0] ^ 1]) + shares[2][1:]  # one flipped bit, same x
    made = Unsealing(3)
    made.add(shares[0])
    made.add(shares[1])
    bad_key = made.add(wrong)
    assert bad_key is not None and bad_key != key
    with pytest.raises(UnsealError, match="does not open this store's keyring"):
        Keyring.load(tmp_path, bad_key)
    assert Keyring.load(tmp_path, unsealed_by(shares[2:5])).store_id


def unsealed_by(shares: list[bytes]) -> bytes:
    unsealing = Unsealing(len(shares))
    made = [unsealing.add(share) for share in shares]
    assert made[-1] is not None
    return made[-1]


def test_two_different_shares_with_one_x_are_refused() -> None:
    shares = split_key(new_key(), 3, 2)
    unsealing = Unsealing(2)
    unsealing.add(shares[0])
    forged = bytes(SHARE_SIZE - 1) + shares[0][-1:]
    with pytest.raises(UnsealError, match="same x"):
        unsealing.add(forged)
    assert unsealing.progress == 0


def test_one_share_is_the_key_itself() -> None:
    key = new_key()
    assert split_key(key, 1, 1) == [key]
    assert Unsealing(1).add(key) == key


def test_shares_read_as_vault_prints_them() -> None:
    share = split_key(new_key(), 3, 2)[0]
    assert decode_share(share.hex()) == share
    assert decode_share(base64.b64encode(share).decode()) == share
    with pytest.raises(UnsealError, match="hex or base64"):
        decode_share("not a share")


@pytest.mark.parametrize(("shares", "threshold"), [(0, 0), (3, 4), (256, 2), (3, 1), (2, 0)])
def test_bad_seal_configurations_are_refused(shares: int, threshold: int) -> None:
    with pytest.raises(UnsealError, match="invalid seal configuration"):
        split_key(new_key(), shares, threshold)
