import itertools
from pathlib import Path

import pytest
import yaml

from clsp.config import Config, config_from_dict, load_config, save_resolved_config
from clsp.errors import ClspError

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def write_yaml(tmp_path: Path, data: object, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_shipped_config_loads() -> None:
    assert len(SHIPPED) >= 6
    for path in SHIPPED:
        assert isinstance(load_config(path), Config), path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_round_trip_through_the_resolved_config(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path, ["ssl.epochs=7", "ssl.augment.crop_scale=[0.5, 1.0]"])
    written = save_resolved_config(cfg, tmp_path / "run")
    assert written == tmp_path / "run" / "config.yaml"
    again = load_config(written)
    assert again == cfg
    assert again.ssl.epochs == 7 and again.ssl.augment.crop_scale == (0.5, 1.0)


def test_overrides_parse_yaml_values(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"data": {"source": "digits"}})
    cfg = load_config(
        path,
        ["positives.weight=0.25", "ssl.method=moco", "data.download=true", "eval.knn_k=[3, 7]", "run.output_dir=/x"],
    )
    assert cfg.positives.weight == 0.25
    assert cfg.ssl.method == "moco"
    assert cfg.data.download is True
    assert cfg.eval.knn_k == (3, 7)
    assert cfg.run.output_dir == Path("/x")


def test_bare_no_means_mixed_precision_off(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("ssl:\n  mixed_precision: no\n")  # YAML 1.1 reads this as False
    cfg = load_config(path, ["diffusion.mixed_precision=no"])
    assert cfg.ssl.mixed_precision == "no" and cfg.diffusion.mixed_precision == "no"
    with pytest.raises(ClspError, match="mixed_precision"):
        load_config(path, ["diffusion.mixed_precision=yes"])


def test_paper_numbers_in_the_shipped_configs() -> None:
    """Spot checks against method.md: lambda, lr, batch, temperature, sampler and probe settings per recipe."""
    expected = {
        "cifar10_simclr_clsp": {"ssl.clsp_weight": 1.0, "ssl.lr": 0.5, "ssl.batch_size": 1024, "eval.linear_lr": 1.0},
        "cifar10_moco_clsp": {"ssl.clsp_weight": 0.5, "ssl.lr": 0.3, "ssl.batch_size": 512, "ssl.queue_size": 32768},
        "cifar100_simclr_clsp": {"ssl.clsp_weight": 1.0, "run.seed": 12, "data.source": "cifar100"},
        "cifar100_moco_clsp": {"ssl.clsp_weight": 0.2, "eval.linear_lr": 10.0, "ssl.augment.solarize_p": 0.2},
        "stl10_simclr_clsp": {"positives.num_layers": 4, "positives.num_steps": 200, "ssl.stem": "stl"},
        "stl10_moco_clsp": {"ssl.clsp_weight": 0.4, "ssl.lr": 0.3, "ssl.batch_size": 1024, "ssl.queue_size": 32768},
    }
    for name, fields in expected.items():
        cfg = load_config(REPO_ROOT / "configs" / f"{name}.yaml")
        assert cfg.ssl.temperature == 0.2 and cfg.positives.weight == 0.1 and cfg.positives.eta == 0.1
        assert cfg.diffusion.lr == 2e-4 and cfg.diffusion.ema_decay == 0.9999
        for dotted, value in fields.items():
            node = cfg
            for part in dotted.split("."):
                node = getattr(node, part)
            assert node == value, (name, dotted)


@pytest.mark.parametrize(
    ("raw", "overrides", "names"),
    [
        ({"data": {"sourcee": "digits"}}, [], ["data.sourcee", "valid keys", "source"]),
        ({"ssl": {"augment": {"hflip": 0.5}}}, [], ["ssl.augment.hflip", "hflip_p"]),
        ({"nonsense": {}}, [], ["'nonsense'", "valid keys", "diffusion"]),
        ({"ssl": {"epochs": "many"}}, [], ["ssl.epochs", "integer", "'many'"]),
        ({"data": {"download": "perhaps"}}, [], ["data.download", "boolean"]),
        ({"positives": {"weight": 1.5}}, [], ["positives.weight", "less than or equal to 1", "1.5"]),
        ({"ssl": {"batch_size": 1}}, [], ["ssl.batch_size", "greater than or equal to 2"]),
        ({}, ["diffusion.beta_end=0.00001"], ["diffusion", "beta_start < beta_end"]),
        ({"data": {"source": "cifar10"}}, [], ["data", "root is required", "data.root"]),
        ({"data": {"source": "digits", "test_split": "val"}}, [], ["test_split 'val'", "['train', 'test']"]),
        ({}, ["ssl.method=byol"], ["ssl.method", "'byol'", "--set ssl.method="]),
    ],
)
def test_validation_errors_name_the_field(tmp_path: Path, raw: dict, overrides: list[str], names: list[str]) -> None:
    path = write_yaml(tmp_path, raw)
    with pytest.raises(ClspError) as caught:
        load_config(path, overrides)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for name in names:
        assert name in message


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("ssl.epochs", "expected section.key=value"),
        ("epochs=3", "expected section.key=value"),
        ("ssl.epochs=[1", "not valid YAML"),
    ],
)
def test_bad_override_strings(override: str, needle: str) -> None:
    with pytest.raises(ClspError, match="--set") as caught:
        config_from_dict({}, "x.yaml", [override])
    assert needle in str(caught.value)


def test_override_cannot_descend_into_a_value() -> None:
    with pytest.raises(ClspError, match="ssl.epochs is a value"):
        config_from_dict({"ssl": {"epochs": 3}}, "x.yaml", ["ssl.epochs.deep=3"])


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ClspError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data:\n  source: [digits\n")
    with pytest.raises(ClspError, match=r"broken.yaml: not valid YAML at line \d"):
        load_config(broken)
    listing = write_yaml(tmp_path, [1, 2], "list.yaml")
    with pytest.raises(ClspError, match="top level must be a mapping"):
        load_config(listing)


def test_source_dependent_defaults() -> None:
    assert config_from_dict({}).data.image_size == 16
    folder = config_from_dict({"data": {"source": "folder", "root": "imgs"}}).data
    assert (folder.train_split, folder.labeled_split, folder.test_split, folder.image_size) == (
        "train",
        "train",
        "test",
        None,
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"source": "digits", "test_split": "train"}, "labeled_split and test_split are both 'train'"),
        ({"source": "folder", "root": "x", "labeled_split": "all"}, "'all' holds the test images too"),
        ({"source": "folder", "root": "x", "roots": {"train": "a"}}, "data.root or data.roots, not both"),
        ({"source": "folder", "roots": {"test": "a"}}, r"roots needs a train folder \(roots.train\)"),
        ({"source": "cifar10", "roots": {"train": "a"}}, "roots is for source folder"),
    ],
)
def test_a_probe_scored_on_its_own_images_is_refused_on_load(data: dict, message: str) -> None:
    with pytest.raises(ClspError, match=message):
        config_from_dict({"data": data})


def test_every_validation_error_is_named_on_one_line(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"data": {"bogus": 1}, "ssl": {"epochs": 0, "lr": -1}})
    with pytest.raises(ClspError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message and "more" not in message
    assert message.startswith(f"{path}: 3 errors: ")
    for name in ("unknown key 'data.bogus'", "ssl.epochs:", "(got 0)", "ssl.lr:", "(got -1)", "--set section.key="):
        assert name in message


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (bytes(range(128, 256)), "not a text file (byte 0 is not UTF-8)"),
        (b"data:\n  source: digits\x00\n", "not valid YAML"),
    ],
)
def test_binary_config_is_one_line(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(content)
    with pytest.raises(ClspError, match=r"binary.yaml: ") as caught:
        load_config(path)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_a_folder_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(ClspError, match="is a folder; pass a YAML file"):
        load_config(tmp_path)


@pytest.mark.parametrize("below", ["", "sub/run"])
def test_output_dir_that_is_a_file_is_refused_on_load(tmp_path: Path, below: str) -> None:
    (tmp_path / "taken").write_text("not a folder")
    path = write_yaml(tmp_path, {})
    with pytest.raises(ClspError, match=f"'{tmp_path / 'taken'}' is a file; set another one with --set run.output_dir"):
        load_config(path, [f"run.output_dir={tmp_path / 'taken' / below}"])
    assert load_config(path, [f"run.output_dir={tmp_path / 'new' / below}"]).run.output_dir == tmp_path / "new" / below


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400", "1.0e+400"])
def test_no_numeric_field_takes_an_infinity_or_nan(tmp_path: Path, value: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"eval:\n  linear_lr: {value}\n")
    with pytest.raises(ClspError, match=r"eval.linear_lr: Input should be a finite number"):
        load_config(path)
    with pytest.raises(ClspError, match=r"ssl.lr: Input should be a finite number"):
        load_config(REPO_ROOT / "configs" / "digits.yaml", [f"ssl.lr={value}"])


@pytest.mark.parametrize("override", ["eval.knn_k=[]", "eval.knn_k=[0, 5]", "demo.methods=[]"])
def test_lists_that_something_iterates_are_not_empty(override: str) -> None:
    with pytest.raises(ClspError, match=override.partition("=")[0]):
        load_config(REPO_ROOT / "configs" / "digits.yaml", [override])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "ssl:\n  epochs: 3\ndata:\n  source: digits\nssl:\n  lr: 0.1\n",
            "line 5: key 'ssl' appears twice \\(lines 1 and 5\\)",
        ),
        ("ssl:\n  epochs: 3\n  lr: 0.2\n  epochs: 4\n", "line 4: key 'epochs' appears twice \\(lines 2 and 4\\)"),
    ],
)
def test_a_repeated_key_is_refused_naming_it_and_both_lines(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ClspError, match=match) as e:
        load_config(path)
    assert "\n" not in str(e.value)


def test_huge_configs_and_alias_bombs_fail_fast(tmp_path: Path) -> None:
    import time

    long_list = tmp_path / "long.yaml"
    long_list.write_text("eval:\n  knn_k: [" + ", ".join(["5"] * 400_000) + "]\n")
    names = "abcdefghi"
    bomb = tmp_path / "bomb.yaml"
    levels = [f"  {names[0]}: &{names[0]} [{', '.join(['1'] * 9)}]"]
    levels += [f"  {n}: &{n} [{', '.join(['*' + p] * 9)}]" for p, n in itertools.pairwise(names)]
    bomb.write_text("eval:\n" + "\n".join(levels) + "\n")
    started = time.perf_counter()
    with pytest.raises(ClspError, match=r"long.yaml: \d+ bytes; a config may have at most 1048576"):
        load_config(long_list)
    with pytest.raises(ClspError, match=r"bomb.yaml: holds more than 100000 values once its YAML aliases are expanded"):
        load_config(bomb)
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("below", ["", "run"])
def test_a_dangling_symlink_output_dir_is_refused_on_load(tmp_path: Path, below: str) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    path = write_yaml(tmp_path, {})
    with pytest.raises(ClspError, match=f"'{tmp_path / 'link'}' is a symlink to nothing; set another one"):
        load_config(path, [f"run.output_dir={tmp_path / 'link' / below}"])
