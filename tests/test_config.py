import dataclasses
from pathlib import Path

import pytest

from cutlib.config import ADAM_BETAS, GRAD_CLIP, LR_DECAY_START, NCE_T, REMOVED, REMOVED_AT, ConfigError, TrainConfig, field_help

PARAMS = Path(__file__).resolve().parent.parent / "params"


def test_the_defaults_are_params_baseline_but_for_the_discriminator_and_where_a_run_goes():
    """docs/library.md says so: a recipe change to baseline.yaml that forgets TrainConfig (or the reverse)
    fails here, and `discriminator: patch+projected` alone gets the measured weight, not 1."""
    differ = {"discriminator": ("patch", "patch+projected"), "data": ("demo", "/kaggle/input/gan-getting-started"),
              "out_dir": ("runs/demo/run", "runs/baseline"), "num_workers": (2, 4), "log_every": (50, 100),
              "sample_every": (1000, 2000), "eval_every": (0, 5000)}
    default, baseline = TrainConfig().to_dict(), TrainConfig.load(PARAMS / "baseline.yaml").to_dict()
    assert {k: (default[k], baseline[k]) for k in default if default[k] != baseline[k]} == differ
    assert TrainConfig(discriminator="patch+projected").to_dict() == {**baseline, **{k: default[k] for k in differ
                                                                                    if k != "discriminator"}}


def test_defaults_are_the_official_cut_constants():
    c = TrainConfig()
    assert (c.image_size, c.load_size, c.batch_size, c.steps) == (256, 286, 1, 50_000)
    assert (c.lr, ADAM_BETAS, LR_DECAY_START) == (2e-4, (0.5, 0.999), 0.5)
    assert (c.gan_loss, c.lambda_gan, c.lambda_nce, c.nce_idt) == ("hinge", 1.0, 1.0, True)
    assert (c.nce_layers, c.num_patches, NCE_T) == ((0, 4, 8, 12, 16), 256, 0.07)
    assert (c.lambda_identity, c.diffaug) == (0.1, "color,translation,cutout")
    assert (GRAD_CLIP, c.amp, c.mode, c.g_block) == (10.0, "auto", "cut", "resnet")


@pytest.mark.parametrize("kw, field", [
    (dict(gan_loss="wgan"), "gan_loss"), (dict(amp="fp8"), "amp"), (dict(mode="cyclegan"), "mode"),
    (dict(steps=-1), "steps"), (dict(image_size=66), "image_size"), (dict(lr=-1.0), "lr"),
    (dict(steps="many"), "steps"), (dict(flip="yes"), "flip"), (dict(g_block="inverted"), "g_block"),
    (dict(nce_layers=(0, 5)), "nce_layers"), (dict(diffaug="color,blur"), "diffaug"),
    (dict(load_size=128), "load_size"), (dict(batch_size=True), "batch_size"),
])
def test_bad_values_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**kw)


def test_unknown_key_names_the_closest_accepted_ones():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['stepz'\]; did you mean 'steps' for 'stepz'"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"image_sze": 64, "zzz": 1})
    assert "'image_size' for 'image_sze'" in str(err.value) and "--help" in str(err.value)
    assert "num_workers" not in str(err.value)  # not a list of all fields


def test_yaml_round_trip(tmp_path):
    c = TrainConfig(steps=123, gan_loss="lsgan", nce_layers=(0, 8, 16), amp="off", data="/x")
    c.save(tmp_path / "c.yaml")
    assert TrainConfig.load(tmp_path / "c.yaml") == c
    assert TrainConfig.load(tmp_path / "c.yaml", steps=7).steps == 7


def test_ints_coerced_to_float_and_layer_strings_parsed():
    c = TrainConfig(lr=1, nce_layers="0,4,8")
    assert c.lr == 1.0 and isinstance(c.lr, float) and c.nce_layers == (0, 4, 8)


def test_fastcut_mode_sets_its_recipe():
    c = TrainConfig(mode="fastcut")
    assert (c.nce_idt, c.lambda_nce, c.flip_equivariance) == (False, 10.0, True)


def test_an_old_config_with_a_removed_field_at_todays_value_loads_and_another_value_names_field_and_commit(capsys):
    old = {**TrainConfig(steps=9).to_dict(), **{k: v for k, v in REMOVED.items() if v is not None},
           "nce_idt": True, "flip_equivariance": False, "lambda_colour": 0, "beta1": 0.5}
    assert TrainConfig.from_dict(old) == TrainConfig(steps=9)
    assert "ignoring removed field(s)" in capsys.readouterr().err
    fast = {**TrainConfig(mode="fastcut").to_dict(), "nce_idt": False, "flip_equivariance": True}
    assert TrainConfig.from_dict(fast).mode == "fastcut"  # what fastcut implied is no conflict
    # a layout, retention and output cadence never changed what a run computed: any value is dropped
    assert TrainConfig.from_dict({**TrainConfig().to_dict(), "channels_last": True, "keep_ckpts": 30,
                                  "progress_every_s": 5}) == TrainConfig()
    for name, value in (("lambda_coarse", 1.0), ("r1_weight", 0.5), ("beta1", 0.9), ("nce_idt", False),
                        ("centred_resampling", True)):
        with pytest.raises(ConfigError) as err:
            TrainConfig.from_dict({**TrainConfig().to_dict(), name: value})
        msg = str(err.value)
        assert msg.startswith(f"{name}={value!r}") and REMOVED_AT in msg and "\n" not in msg


def test_every_field_has_a_help_comment():
    helps = field_help()
    assert {f.name for f in dataclasses.fields(TrainConfig)} == set(helps)
    assert all(helps.values())


def test_on_and_off_read_as_yaml_booleans_are_the_words_again():
    from cutlib.train import parse_cli

    cfg = parse_cli(["--amp", "off", "--cuda_graph", "on"])
    assert cfg.amp == "off" and cfg.cuda_graph == "on"
    with pytest.raises(ConfigError, match="amp='on'"):
        parse_cli(["--amp", "yes"])  # a boolean that is no accepted word is still named


def test_the_cpu_recipe_is_the_default_at_cpu_scale_ending_annealed_on_its_time_budget():
    """params/cpu.yaml is params/baseline.yaml's recipe, not a third one: only the scale, the schedule and the
    networks' size differ (a light G and D for CPUs, issue 57), so a change of the default that forgets the
    CPU recipe fails here."""
    scale = {"data", "image_size", "steps", "lr_schedule", "time_budget_hours", "identity_warmup", "device",
             "num_workers", "log_every", "sample_every", "ckpt_every", "eval_every", "out_dir",
             "g_block", "ngf", "ndf"}
    base, cpu = (dataclasses.asdict(TrainConfig.load(PARAMS / f)) for f in ("baseline.yaml", "cpu.yaml"))
    assert {k: v for k, v in cpu.items() if k not in scale} == {k: v for k, v in base.items() if k not in scale}
    # the budget ends the run, not the steps, and the lr has decayed to 0 by then
    assert cpu["lr_schedule"] == "time" and 0 < cpu["time_budget_hours"] <= 2.5 and cpu["steps"] >= 50_000
    assert (cpu["image_size"], cpu["num_workers"], cpu["eval_every"]) == (128, 0, 0)
    assert (cpu["g_block"], cpu["ngf"], cpu["ndf"]) == ("mobile", 32, 32)


def test_a_generator_is_rebuilt_from_its_architecture_whatever_the_training_fields_were():
    """Generation needs G's fields alone: a checkpoint trained with a removed training lever still paints
    (its lambda_style changed the weights, not the network); a removed architecture is still refused."""
    saved = {**TrainConfig(ngf=16, g_block="mobile", image_size=128, n_blocks=2, nce_layers=(0, 4)).to_dict(),
             "lambda_style": 5.0, "r1_weight": 1}
    cfg = TrainConfig.of_generator(saved)
    assert (cfg.ngf, cfg.g_block, cfg.image_size, cfg.n_blocks) == (16, "mobile", 128, 2)
    with pytest.raises(ConfigError, match="centred_resampling=True"):
        TrainConfig.of_generator({**saved, "centred_resampling": True})
