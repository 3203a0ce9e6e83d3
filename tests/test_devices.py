import pytest
import torch

from v2idetr.devices import resolve_device
from v2idetr.errors import V2IDetrError


def test_auto_is_cuda_only_where_there_is_one():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_names_the_device_and_what_to_give():
    with pytest.raises(V2IDetrError, match=r"^device = 'cuda:1': CUDA is not available.*give cpu, or auto"):
        resolve_device("cuda:1")
    with pytest.raises(V2IDetrError, match=r"^config key 'train.device' = 'cuda'"):
        resolve_device("cuda", "config key 'train.device'")
