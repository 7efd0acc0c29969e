# The one compiled part: planoscope.ingest._otlp, the OTLP decoder on the ingest hot path.
from setuptools import Extension, setup

setup(ext_modules=[Extension("planoscope.ingest._otlp", ["src/planoscope/ingest/_otlp.c"], extra_compile_args=["-O2"])])
