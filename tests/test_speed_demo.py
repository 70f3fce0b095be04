"""`make demo` (tools/speed_demo.py) end to end at a toy size: every stage runs, every file it
announces exists, and the gap table scores each lab-like domain before and after adaptation
and self-training."""

from __future__ import annotations

import csv
import re

import pytest
from conftest import REPO, load_script

from lib.config import default_config, merge_from_file


def demo_config(name: str):
    config = default_config()
    merge_from_file(config, str(REPO / "experiments" / "speed" / "hrnet" / f"demo_{name}.yaml"))
    return config


def test_the_fine_model_starts_from_the_coarse_one_where_they_are_one_network(monkeypatch):
    demo = load_script("tools/speed_demo.py", monkeypatch)
    coarse, fine = demo_config("coarse"), demo_config("fine")
    assert demo.fine_start_weights(coarse, fine, "coarse.pth") == "coarse.pth"
    fine.MODEL.PRETRAINED = "imagenet.pth"  # the fine config's own choice wins
    assert demo.fine_start_weights(coarse, fine, "coarse.pth") == "imagenet.pth"
    fine.MODEL.PRETRAINED = ""
    fine.MODEL.EXTRA.STAGE3.NUM_CHANNELS = [16, 32, 96]  # another network: from scratch
    assert demo.fine_start_weights(coarse, fine, "coarse.pth") == ""


def test_an_emulated_slow_host_shrinks_the_budget_by_its_rate(monkeypatch):
    """The budget in this host's seconds: 20 minutes of a host whose fine step runs 140 img/s
    are 8 minutes of one at 350, whatever spell this host is in; a faster 'emulation' leaves
    the budget alone."""
    demo = load_script("tools/speed_demo.py", monkeypatch)
    assert demo.emulated_budget_s(20.0, 350.0, 140.0) == pytest.approx(480.0)
    assert demo.emulated_budget_s(20.0, 280.0, 140.0) == pytest.approx(600.0)
    assert demo.emulated_budget_s(20.0, 350.0, 0.0) == 1200.0
    assert demo.emulated_budget_s(20.0, 100.0, 140.0) == 1200.0


def test_what_follows_training_is_reserved_per_image_it_handles(monkeypatch):
    """The reserve after training grows with the validation and test splits and with the
    domains' images: the demo's 300 / 300 / 2 x 100 keep 7.6 fp32 fine epochs."""
    demo = load_script("tools/speed_demo.py", monkeypatch)
    default = demo.parse_args([])
    assert (default.val, default.test, default.domain_count) == (300, 300, 100)
    assert demo.after_training_fp32_epochs(default) == pytest.approx(7.6)
    larger = demo.parse_args(["--val", "1000", "--test", "1000"])
    assert demo.after_training_fp32_epochs(larger) == pytest.approx(7.6 + 0.0035 * 1400)
    no_domains = demo.parse_args(["--domains"])
    assert demo.after_training_fp32_epochs(no_domains) == pytest.approx(2.4)
    assert demo.after_training_fp32_epochs(default, domain_extras=False) == pytest.approx(3.2)
    plan = demo.EpochPlan([8, 17], [8, 17], 1200.0, after_fp32_epochs=6.8, fp32_extra_s=5.0,
                          step_epoch_s=15.0)
    assert plan.training_end_s() == pytest.approx(1200.0 - 6.8 * 20.0)
    plan.drift_margin = 0.07  # the demo's: training planned to end 84 s of 1200 early
    assert plan.training_end_s() == pytest.approx(1116.0 - 6.8 * 20.0)


def test_a_slow_host_drops_the_domains_extras_for_fine_epochs(monkeypatch):
    """Where the reserve for adaptation and self-training would cut the fine model below its
    configured epochs, the plan drops them and spends their time on fine epochs; where the
    fine model keeps its epochs, they stay; where none are asked for, nothing is dropped."""
    demo = load_script("tools/speed_demo.py", monkeypatch)
    seconds = [12.0, 14.0]  # an epoch of each model; fp32 fine epochs 5 s longer

    def fitted(budget_s: float, lean: float | None = 2.4):
        plan = demo.EpochPlan([8, 17], [8, 17], budget_s, after_fp32_epochs=6.8,
                              fp32_extra_s=5.0, lean_after_fp32_epochs=lean,
                              step_epoch_s=seconds[1])
        with_extras = plan.fit(lambda: demo.fit_epochs_keeping_first(
            plan.training_end_s() - 25.0, plan.wanted, seconds, 0.6))
        return plan, with_extras

    roomy, with_extras = fitted(600.0)  # 600 - 6.8 x 19 - 25 - 8 x 12 = 349.8 s: 24 epochs
    assert with_extras == 17 and roomy.domain_extras and roomy.epochs == [8, 17]
    assert roomy.training_end_s() == pytest.approx(600.0 - 6.8 * 19.0)
    tight, with_extras = fitted(400.0)  # 149.8 s: 10 epochs; 2.4 x 19 kept: 233.4 s, 16
    assert with_extras == 10 and not tight.domain_extras and tight.epochs == [8, 16]
    assert tight.training_end_s() == pytest.approx(400.0 - 2.4 * 19.0)
    asked_none, with_extras = fitted(400.0, lean=None)
    assert with_extras == 10 and asked_none.domain_extras and asked_none.epochs == [8, 10]
    # a later fit with room again keeps them
    tight.budget_s = 600.0
    assert tight.fit(lambda: [8, 17]) == 17 and tight.domain_extras


@pytest.mark.slow
def test_demo_runs_every_stage_and_scores_the_domain_gap(tmp_path, run_tool):
    data, out = tmp_path / "data", tmp_path / "out"
    done = run_tool(
        "tools/speed_demo.py", "--data", data, "--out", out, "--log", tmp_path / "log",
        "--train", 6, "--val", 3, "--test", 2, "--domain-count", 3, "--width", 160,
        "--height", 100, "--overlays", 1, "--adapt-steps", 2, "--max-epoch-factor", 1,
        "TRAIN.END_EPOCH", 1, "TRAIN.BATCH_SIZE_PER_GPU", 3, "TEST.BATCH_SIZE_PER_GPU", 3,
        "DATASET.CACHE_IMAGES_MB", 0, "SELF_TRAINING.EPOCHS", 1, timeout=600)
    text = done.stdout
    assert "== training the fine model (crop around the spacecraft), from the coarse model's " \
        "weights" in text
    for domain in ("lightbox", "sunlamp"):
        assert (data / domain / "test.json").is_file()
        assert (data / domain / "labels.json").is_file()
    # the scores name their worst images: here all of them, carrying all of the score
    assert re.search(r"validation, coarse model \(two-stage\): the 3 worst images carry 100% "
                     r"of the score \(img\d+\.jpg [\d.]+, \d+ deg", text), text
    assert "test, coarse model (two-stage): the 2 worst images carry 100% of the score" in text
    gap = text[text.index("== across the domain gap"):]
    demo_row = re.search(r"\| demo model \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", gap)
    adapted_row = re.search(r"\| \+ test-time adaptation \(2 steps\) \| - \| ([\d.]+) \| "
                            r"([\d.]+) \|", gap)
    self_row = re.search(r"\| \+ pseudo-label self-training \(one model, 3 round\(s\); "
                         r"(\d+) lightbox, (\d+) sunlamp images kept\) \| - \| ([\d.]+) \| "
                         r"([\d.]+) \|", gap)
    assert demo_row and adapted_row and self_row, gap
    # one SPEC2021 file per run, both domains, category first
    for line in text.splitlines():
        if line.strip().startswith(("SPEC2021 submission", "adapted (SPEC2021)",
                                    "self-trained (SPEC2021)")):
            with open(line.split()[-1], newline="") as handle:
                categories = {row[0] for row in csv.reader(handle)}
            assert categories == {"lightbox", "sunlamp"}
    adapted = sorted((out / "adapted").rglob("model_adapted_*.pth"))
    assert [p.name for p in adapted] == [
        "model_adapted_coarse_lightbox_test.pth", "model_adapted_coarse_sunlamp_test.pth",
        "model_adapted_lightbox_test.pth", "model_adapted_sunlamp_test.pth"]
    pictures = out / "pictures"
    for folder in ("overlays", "overlays_lightbox", "overlays_sunlamp"):
        assert list((pictures / folder).glob("*.png")) or list((pictures / folder).glob("*.jpg"))
    assert (pictures / "domains.png").is_file()


def test_the_plan_ends_training_before_the_drift_margin_and_the_reserve(monkeypatch):
    """plan_epochs on probed rates (coarse 400, fine 300 img/s in bf16, 200 in fp32): training
    must end by 93% of the 20 minutes less 7.6 fp32 fine epochs, and both models' configured
    epochs fit before that."""
    demo = load_script("tools/speed_demo.py", monkeypatch)
    monkeypatch.setattr(demo, "probe_rates", lambda configs: [400.0, 300.0])
    monkeypatch.setattr(demo, "step_rate", lambda config, amp: 200.0)
    monkeypatch.setattr(demo, "training_amp", lambda config: True)
    configs = [demo_config("coarse"), demo_config("fine")]
    args = demo.parse_args([])
    plan = demo.plan_epochs(args, configs, 40.0)
    fine_epoch_s = (4000 * demo.LOOP_OVERHEAD + 300 * demo.VALIDATION_COST
                    / configs[1].TRAIN.VALIDATE_EVERY) / 300.0
    fp32_epoch_s = fine_epoch_s + 4000 / 200.0 - 4000 / 300.0
    assert plan.drift_margin == pytest.approx(0.07) and plan.domain_extras
    assert plan.step_epoch_s == pytest.approx(fine_epoch_s)
    assert plan.training_end_s() == pytest.approx(1200.0 * 0.93 - 7.6 * fp32_epoch_s)
    assert plan.epochs == [configs[0].TRAIN.END_EPOCH, configs[1].TRAIN.END_EPOCH]


def test_the_fine_run_is_refitted_on_its_own_epochs(monkeypatch):
    """After 4 fine epochs the run gets as many more as its steady epoch (18 s) fits before
    training must end: 1200 s less 7% less 7.6 fp32 epochs (15 + 5 s) with the domains'
    extras, 3.2 without; at most 3x its 17, at least one more."""
    demo = load_script("tools/speed_demo.py", monkeypatch)

    def refit(elapsed_s):
        plan = demo.EpochPlan([8, 17], [8, 17], 1200.0, max_factor=3.0, fp32_extra_s=5.0,
                              after_fp32_epochs=7.6, lean_after_fp32_epochs=3.2,
                              drift_margin=0.07, step_epoch_s=15.0)
        return demo.refit_fine_epochs(plan, 4, 18.0, elapsed_s), plan

    epochs, plan = refit(600.0)  # 1116 - 152 - 600 = 364 s: 20 more
    assert epochs == 24 and plan.epochs == [8, 24] and plan.domain_extras
    epochs, plan = refit(800.0)  # 164 s: 13 in all, fewer than 17: the extras go, 252 s: 14
    assert epochs == 18 and not plan.domain_extras
    assert refit(100.0)[0] == 51  # 864 s would be 48 more: 3 x 17 at most
    assert refit(1100.0)[0] == 5  # past the end already: one more
