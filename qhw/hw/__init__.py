"""Hardware generator: a weight-stationary INT systolic array in Amaranth 0.5 (see docs/hardware.md).

``config.ArrayConfig`` describes an array; ``accel.Accelerator`` is the top component;
``generate.write`` emits NAME.v and NAME.json; ``driver.plan_gemm`` and ``simulate.simulate``
run GEMMs on it in the Amaranth simulator.
"""
