"""What happens before a run trains: the ``launch/*.py`` entry points (``launcher``), the checks before any process
group starts (``preflight`` on the machine and data, ``config_checks`` on the config against itself and the model,
``model_compat`` on the models built on the meta device, all reported as ``findings``), and ``videomae doctor``
(``doctor``, ``doctor_checks``), the rehearsal on the real backend. The training loop itself is
:mod:`videomae.engine`; this room uses it, never the other way round. Import the submodules directly.
"""
