"""RELATE loader against the real public metadata (../shared/data/relate, no audio).

The expected counts below were computed independently of the loader, twice: with the
``csv`` module and with a hand-written quote-aware line splitter, both keeping rows whose
``in RELATE dataset`` is not "excluded" and whose ``anchor label`` is "False", and
counting distinct (wavname, text). They match the dataset README's statistics
(2,862 train pairs / 9,963 train ratings; 2,598 / 7,797 for validation + test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from humanclap.data import DatasetError, load_rated
from humanclap.data.relate import load_relate

RELATE = Path(__file__).resolve().parents[2] / "shared" / "data" / "relate"
pytestmark = pytest.mark.skipif(
    not (RELATE / "scores" / "REL.csv").is_file(),
    reason=f"real RELATE metadata not found at {RELATE} (the shared data checkout)",
)

PAIRS_PER_SPLIT = {"train": 2862, "validation": 1287, "test": 1311}
RATINGS_PER_SPLIT = {"train": 9963, "validation": 3897, "test": 3900}
PAIRS_PER_SPLIT_SYSTEM = {
    ("train", "audiocaps"): 954,
    ("train", "audioldm"): 479,
    ("train", "audioldm2"): 475,
    ("train", "tango"): 475,
    ("train", "tango2"): 479,
    ("validation", "audiocaps"): 429,
    ("validation", "audioldm"): 216,
    ("validation", "audioldm2"): 213,
    ("validation", "tango"): 213,
    ("validation", "tango2"): 216,
    ("test", "audiocaps"): 437,
    ("test", "audioldm"): 221,
    ("test", "audioldm2"): 216,
    ("test", "tango"): 216,
    ("test", "tango2"): 221,
}
PAIRS_PER_SYSTEM = {"audiocaps": 1820, "audioldm": 916, "audioldm2": 904, "tango": 904, "tango2": 916}
EXAMPLE = (
    "/tango/test/102816.wav",
    "A group of people screaming and laughing as firecrackers ignite then explode followed by a muffled explosion",
)


@pytest.fixture(scope="module")
def relate():
    return load_relate(RELATE)


def test_counts_per_split_and_system(relate):
    pairs = relate.pairs
    assert pairs["split"].value_counts().to_dict() == PAIRS_PER_SPLIT
    assert pairs.groupby(["split", "system"]).size().to_dict() == PAIRS_PER_SPLIT_SYSTEM
    assert pairs["system"].value_counts().to_dict() == PAIRS_PER_SYSTEM
    assert pairs.groupby("split")["n_ratings"].sum().to_dict() == RATINGS_PER_SPLIT
    assert len(relate.ratings) == sum(RATINGS_PER_SPLIT.values())
    assert pairs["pair_id"].is_unique and list(pairs.index) == list(range(len(pairs)))


def test_anchor_rows_kept_on_request():
    # 14 rows (3 pairs) are marked as anchors but not "excluded": 2 train, 1 validation.
    data = load_relate(RELATE, drop_anchors=False)
    counts = data.pairs["split"].value_counts().to_dict()
    assert counts == {"train": 2864, "validation": 1288, "test": 1311}
    assert len(data.ratings) == 17774


def test_system_natural_and_types(relate):
    pairs = relate.pairs
    # audio type lumps AudioLDM2 with AudioLDM and Tango2 with Tango; the folder does not.
    assert set(pairs.loc[pairs.system == "audioldm2", "audio_type"]) == {"audioldm"}
    assert set(pairs.loc[pairs.system == "tango2", "audio_type"]) == {"tango"}
    assert (pairs["natural"] == (pairs["system"] == "audiocaps")).all()
    assert pairs["human"].between(0, 1).all() and pairs["human_std"].between(0, 0.5).all()
    ids = relate.ratings["listener_id"]
    assert ids.map(type).eq(str).all() and "0000" in set(ids)
    assert relate.ratings["age"].notna().all()  # every kept REL listener has attributes


def test_example_pair_means(relate):
    # REL 8,10,8,10,8; IS 10,8,10,9,10; OS 10,5,0,9,10 (read by hand from the CSVs).
    pairs = relate.pairs
    row = pairs[(pairs.wavname == EXAMPLE[0]) & (pairs.text == EXAMPLE[1])].iloc[0]
    assert row["split"] == "validation" and row["system"] == "tango"
    assert row["n_ratings"] == 5
    assert row["human"] == pytest.approx(0.88)
    assert row["human_std"] == pytest.approx(np.std([0.8, 1, 0.8, 1, 0.8]))
    assert row["is_score"] == pytest.approx(0.94) and row["os_score"] == pytest.approx(0.68)
    # 129 REL pairs have no IS/OS ratings: NaN, not dropped.
    assert pairs["is_score"].isna().sum() == 129 and pairs["os_score"].isna().sum() == 129


def test_missing_audio_is_reported_not_dropped(relate, tmp_path):
    pairs = relate.pairs
    present = pairs.wavname.iloc[[0, 5, 17]].tolist()
    for w in present:
        f = tmp_path / "RELATE_wave" / w.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"RIFF")  # existence is all the loader checks
    for root in (tmp_path, tmp_path / "RELATE_wave"):  # parent or RELATE_wave itself
        data = load_rated(f"relate:{RELATE}", audio_root=str(root))
        assert len(data.pairs) == len(pairs)
        found = data.pairs[data.pairs.audio_exists]
        assert sorted(found.wavname) == sorted(present)
        assert all(Path(a).is_file() for a in found.audio)
        assert not data.pairs.loc[~data.pairs.audio_exists].empty


def test_split_subset(relate):
    test = relate.split("test")
    assert len(test) == PAIRS_PER_SPLIT["test"]
    assert len(test.ratings) == RATINGS_PER_SPLIT["test"]
    assert set(test.ratings.pair_id) == set(test.pairs.pair_id)
    with pytest.raises(DatasetError, match="available splits"):
        relate.split("dev")


def test_bad_specs(tmp_path):
    with pytest.raises(DatasetError, match="scores/REL.csv"):
        load_rated(f"relate:{tmp_path}")
    (tmp_path / "scores").mkdir()
    (tmp_path / "scores" / "REL.csv").write_text("wavname,text,score\n/a/b.wav,x,5\n")
    with pytest.raises(DatasetError, match="missing column"):
        load_rated(f"relate:{tmp_path}")
    with pytest.raises(DatasetError, match="relate:"):
        load_rated(str(tmp_path))
    with pytest.raises(DatasetError, match="not understood"):
        load_rated("foo:bar")
