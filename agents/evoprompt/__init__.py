"""EvoPrompt: GA and DE prompt evolution (Guo et al. 2023)."""

from agents.evoprompt.config import EvoConfig
from agents.evoprompt.evoprompt import arun, run
from agents.evoprompt.fitness import Fitness
from agents.evoprompt.tasks import RECIPES, Example, Task, TaskError, from_file, recipe
from agents.evoprompt.trace import EvoError, EvoResult, Generation, Node

__all__ = ["EvoConfig", "EvoError", "EvoResult", "Example", "Fitness", "Generation", "Node", "RECIPES", "Task",
           "TaskError", "arun", "from_file", "recipe", "run"]
