"""Model architectures, training, and the cached model zoo."""

from labkit.models.nets import MLP, SmallCNN
from labkit.models.training import History, accuracy, predict, train
from labkit.models.zoo import RECIPES, Recipe, build, pretrained, weights_path

__all__ = [
    "MLP",
    "RECIPES",
    "History",
    "Recipe",
    "SmallCNN",
    "accuracy",
    "build",
    "predict",
    "pretrained",
    "train",
    "weights_path",
]
