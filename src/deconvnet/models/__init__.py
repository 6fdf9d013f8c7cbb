"""The model zoo: ``load(name, weights=None)`` returns a network ready for deconvnet use.

>>> import deconvnet.models as zoo
>>> zoo.names()
['alexnet', 'caffenet', 'default', 'squeezenet1_0', 'squeezenet1_1', 'vgg16', 'zfnet']
>>> model = zoo.load("default")          # embedded CIFAR-10 weights, eval mode
>>> model.preprocessing.resize_rule, model.categories[0], model.layer_aliases["conv2"]
('none', 'airplane', 'features.4')

Each returned model carries ``preprocessing``, ``categories`` and ``layer_aliases``
attributes (see :mod:`deconvnet.models._api`); :func:`info` gives the same metadata
without building anything.
"""

from deconvnet.errors import ModelNotFoundError
from deconvnet.models import alexnet as _alexnet  # noqa: F401  (registers)
from deconvnet.models import caffenet as _caffenet  # noqa: F401
from deconvnet.models import default as _default  # noqa: F401
from deconvnet.models import squeezenet as _squeezenet  # noqa: F401
from deconvnet.models import vgg as _vgg  # noqa: F401
from deconvnet.models import zfnet as _zfnet  # noqa: F401
from deconvnet.models._api import ModelSpec, Weights, info, load, names, register
from deconvnet.models.alexnet import AlexNet
from deconvnet.models.caffenet import CaffeNet, state_dict_from_caffe
from deconvnet.models.default import TinyZFNet
from deconvnet.models.squeezenet import SqueezeNet
from deconvnet.models.state_dicts import RANDOM_INIT, apply_state_dict, read_state_dict
from deconvnet.models.vgg import VGG
from deconvnet.models.zfnet import ZFNet

__all__ = [
    "RANDOM_INIT",
    "VGG",
    "AlexNet",
    "CaffeNet",
    "ModelNotFoundError",
    "ModelSpec",
    "SqueezeNet",
    "TinyZFNet",
    "Weights",
    "ZFNet",
    "apply_state_dict",
    "info",
    "load",
    "names",
    "read_state_dict",
    "register",
    "state_dict_from_caffe",
]
