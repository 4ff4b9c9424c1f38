"""Lightning tasks: pretraining and gene-region tagging, and the data module that feeds them."""
from .base import ReformerTask
from .callbacks import ExportModel
from .data import GenomeDataModule
from .pretrain import MaskedLMTask
from .tagging import TaggingTask

TASKS = {MaskedLMTask.task_name: MaskedLMTask, TaggingTask.task_name: TaggingTask}

__all__ = ["ReformerTask", "MaskedLMTask", "TaggingTask", "GenomeDataModule", "ExportModel", "TASKS"]
