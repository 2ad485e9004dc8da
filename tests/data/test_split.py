import pytest

from medssl.data.split import load_split, make_split, save_split
from medssl.errors import MedsslError

IDS = [f"c{i:02d}" for i in range(40)]


def test_split_is_disjoint_and_covers_everything():
    s = make_split(IDS, test_fraction=0.2, val_fraction=0.1, seed=3)
    assert not set(s["train"]) & set(s["val"]) and not set(s["train"]) & set(s["test"])
    assert sorted(s["train"] + s["val"] + s["test"]) == IDS
    assert len(s["test"]) == 8 and len(s["val"]) == 4


def test_test_cases_do_not_depend_on_seed_or_fraction():
    a = make_split(IDS, test_fraction=0.2, val_fraction=0.1, seed=0, label_fraction=1.0)
    b = make_split(IDS, test_fraction=0.2, val_fraction=0.1, seed=5, label_fraction=0.1)
    assert a["test"] == b["test"] and a["val"] == b["val"]
    assert set(b["train_labelled"]) <= set(a["train"]) and len(b["train_labelled"]) == 3


def test_label_subsets_are_nested_and_seeded():
    small = make_split(IDS, test_fraction=0.2, val_fraction=0.1, seed=1, label_fraction=0.1)
    large = make_split(IDS, test_fraction=0.2, val_fraction=0.1, seed=1, label_fraction=0.25)
    other = make_split(IDS, test_fraction=0.2, val_fraction=0.1, seed=2, label_fraction=0.25)
    assert set(small["train_labelled"]) <= set(large["train_labelled"])
    assert large["train_labelled"] != other["train_labelled"]


def test_bad_fractions_and_tiny_datasets():
    with pytest.raises(MedsslError, match="label-fraction"):
        make_split(IDS, test_fraction=0.2, val_fraction=0.1, label_fraction=0)
    with pytest.raises(MedsslError, match="too few"):
        make_split(["a", "b"], test_fraction=0.4, val_fraction=0.4)


def test_split_file_round_trip_and_unknown_case(tmp_path):
    s = make_split(IDS, test_fraction=0.2, val_fraction=0.1)
    save_split(s, tmp_path / "split.json")
    assert load_split(tmp_path / "split.json", set(IDS))["test"] == s["test"]
    with pytest.raises(MedsslError, match="not in the dataset"):
        load_split(tmp_path / "split.json", set(IDS[:5]))


def test_a_fraction_n_over_train_labels_exactly_n_cases() -> None:
    # the split keeps 80 % for training: 30 ids -> 24 training cases; every N in 1..24 must come out as N
    for n_train in (24, 25, 140):
        ids = [f"c{i:03d}" for i in range(n_train)]
        for n in range(1, n_train + 1):
            split = make_split(ids, test_fraction=0.0, val_fraction=0.0, label_fraction=n / n_train, seed=1)
            assert len(split["train_labelled"]) == n, (n_train, n)
