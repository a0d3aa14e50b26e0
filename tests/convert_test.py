"""The conversion CLI refuses a checkpoint of another family, naming both, and writes nothing."""
import os

import pytest

import convert
from tests.pixart_test import CONFIGS, tiny_torch_model


@pytest.fixture(scope="module")
def pixart_folder(tmp_path_factory):
  folder = tmp_path_factory.mktemp("pixart") / "transformer"
  tiny_torch_model(**CONFIGS[sorted(CONFIGS)[0]]).save_pretrained(folder)
  return folder


@pytest.mark.parametrize("model", ["flux", "sana"])
def test_diffusers_folder_of_another_family_is_refused(pixart_folder, tmp_path, capsys, model):
  dst = tmp_path / "out"
  assert convert.main(["--model", model, "--src", str(pixart_folder), "--dst", str(dst)]) == 2
  message = capsys.readouterr().err
  assert "PixArtTransformer2DModel (pixart)" in message and f"not the {model} model" in message
  assert not dst.exists()


def test_flax_checkpoint_of_another_family_is_refused(pixart_folder, tmp_path, capsys):
  flax_dir = tmp_path / "flax"
  assert convert.main(["--model", "pixart", "--src", str(pixart_folder), "--dst", str(flax_dir)]) == 0
  out = tmp_path / "out"
  assert convert.main(["--model", "flux", "--src", str(flax_dir), "--dst", str(out),
                       "--to", "diffusers"]) == 2
  assert "Flax checkpoint of a pixart model, not flux" in capsys.readouterr().err
  assert not os.path.exists(out)
