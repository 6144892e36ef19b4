"""EvoPrompt: GA and DE prompt evolution (Guo et al. 2023)."""

from conclave.agents.evoprompt.config import EvoConfig
from conclave.agents.evoprompt.evoprompt import arun, run
from conclave.agents.evoprompt.fitness import Fitness
from conclave.agents.evoprompt.tasks import RECIPES, Example, Task, TaskError, from_file, recipe
from conclave.agents.evoprompt.trace import EvoError, EvoResult, Generation, Node

__all__ = ["EvoConfig", "EvoError", "EvoResult", "Example", "Fitness", "Generation", "Node", "RECIPES", "Task",
           "TaskError", "arun", "from_file", "recipe", "run"]
