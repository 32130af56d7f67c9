"""Progressive training as one declaration: a stages file chains pretrain -> post-pretrain -> fine-tune runs, each
starting from the previous stage's exported weights.

``spec`` reads and checks a stages file (:func:`load_recipe`; chained encoders compared by
:mod:`videomae.launching.model_compat`),
``plan`` decides per stage (done, resume, afresh) and builds its command, ``runner`` runs the stages as subprocesses
and writes ``stages.json`` (:func:`run_recipe`). ``launch/stages.py`` is the command line.
"""

from videomae.stages.plan import Decision, build_command, decide, plan, select
from videomae.stages.runner import read_records, run_recipe
from videomae.stages.spec import Recipe, Stage, StagesError, format_override, load_recipe

__all__ = [
    "Decision",
    "Recipe",
    "Stage",
    "StagesError",
    "build_command",
    "decide",
    "format_override",
    "load_recipe",
    "plan",
    "read_records",
    "run_recipe",
    "select",
]
