"""Tracking metrics of a sequence (training/evaluation/tracking.py, py-motmetrics underneath)."""

from __future__ import annotations

import numpy as np
import pytest

from partglee_ros.runtime.result import ObjectResult, SegmentationResult
from training.data.hierarchy import ImageAnnotation, ObjectAnnotation
from training.evaluation.tracking import tracking_metrics, tracking_to_markdown

H, W = 60, 80
FRAMES = 5


def rect(x: int, y: int, w: int = 20, h: int = 20) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y : y + h, x : x + w] = True
    return mask


def truth(frames: int = FRAMES, track_ids: tuple[int, int] = (1, 2)) -> list[ImageAnnotation]:
    """A mug moving right and a kettle moving down, 2 px per frame."""
    return [
        ImageAnnotation(
            t,
            f"{t}.png",
            H,
            W,
            [
                ObjectAnnotation(1, "mug", rect(5 + 2 * t, 5), track_id=track_ids[0]),
                ObjectAnnotation(2, "kettle", rect(50, 5 + 2 * t), track_id=track_ids[1]),
            ],
        )
        for t in range(frames)
    ]


def predicted(ann: ImageAnnotation, ids: list[int], labels: list[str] | None = None) -> SegmentationResult:
    labels = labels or [o.name for o in ann.objects]
    objects = [
        ObjectResult(i + 1, label, 0.9, np.zeros(4, np.float32), o.mask, track_id=track)
        for i, (o, track, label) in enumerate(zip(ann.objects, ids, labels, strict=True))
    ]
    return SegmentationResult(H, W, 1, objects)


def test_perfect_tracks_score_one() -> None:
    gts = truth()
    got = tracking_metrics(gts, [predicted(a, [10, 20]) for a in gts])
    assert got["IDF1"] == got["MOTA"] == got["MOTP_iou"] == 1.0
    assert (got["id_switches"], got["misses"], got["false_positives"]) == (0, 0, 0)
    assert (got["frames"], got["ground_truth_tracks"], got["mostly_tracked"]) == (FRAMES, 2, 2)
    assert "| IDF1 (identity F1) | 1.000 |" in tracking_to_markdown(got)


def test_swapped_ids_count_as_switches_and_lower_idf1() -> None:
    """Two mugs side by side whose predicted ids swap after frame 2: two switches, and the best one-to-one
    correspondence keeps 3 of 5 frames of each track (IDF1 = 6 / 10)."""
    gts = [
        ImageAnnotation(
            t,
            f"{t}.png",
            H,
            W,
            [
                ObjectAnnotation(1, "mug", rect(5, 5), track_id=1),
                ObjectAnnotation(2, "mug", rect(40, 5), track_id=2),
            ],
        )
        for t in range(FRAMES)
    ]
    preds = [predicted(a, [10, 20] if t < 3 else [20, 10]) for t, a in enumerate(gts)]
    got = tracking_metrics(gts, preds)
    assert got["id_switches"] == 2 and got["IDF1"] == pytest.approx(0.6)
    assert got["MOTA"] == pytest.approx(1 - 2 / 10)


def test_a_wrong_label_or_a_missing_result_never_matches() -> None:
    gts = truth()
    preds = [predicted(a, [10, 20], ["kettle", "kettle"]) for a in gts]  # the mug called a kettle
    preds[4] = None  # no result for the last frame: both its objects missed
    got = tracking_metrics(gts, preds)
    assert got["misses"] == FRAMES + 1 and got["false_positives"] == FRAMES - 1
    assert got["IDR"] == pytest.approx((FRAMES - 1) / (2 * FRAMES))
    # no match at all: MOTP is undefined, shown as the AP tables show it
    nothing = tracking_metrics(gts, [None] * len(gts))
    assert "| MOTP (mean IoU of matches) | n/a |" in tracking_to_markdown(nothing)


def test_untracked_predictions_are_new_identities_each_frame() -> None:
    gts = truth()
    got = tracking_metrics(gts, [predicted(a, [0, 0]) for a in gts])
    assert got["misses"] == 0 and got["id_switches"] == 2 * (FRAMES - 1)


def test_no_track_ids_in_the_ground_truth_means_no_tracking_metrics() -> None:
    gts = truth(track_ids=(0, 0))
    assert tracking_metrics(gts, [predicted(a, [10, 20]) for a in gts]) is None
    with pytest.raises(ValueError, match="predictions"):
        tracking_metrics(truth(), [None])


def test_labels_ignored_scores_association_alone() -> None:
    """The mug called a cup in frame 2. Labelled, that frame is a miss whatever its id; labels ignored, a
    track that kept its id through it keeps the identity (IDF1 1), a new id there switches away and back."""
    gts = truth()

    def run(flicker_id: int) -> dict:
        preds = [
            predicted(a, [flicker_id if t == 2 else 10, 20], ["cup" if t == 2 else "mug", "kettle"])
            for t, a in enumerate(gts)
        ]
        return tracking_metrics(gts, preds)

    kept, new = run(10), run(30)
    for got in (kept, new):
        assert got["misses"] == 1 and got["id_switches"] == 0
    assert kept["IDF1_any_label"] == 1.0 and kept["id_switches_any_label"] == 0
    assert new["id_switches_any_label"] == 2 and new["IDF1_any_label"] == pytest.approx(0.9)
    assert "| identity switches, labels ignored | 2 |" in tracking_to_markdown(new)
