# Two commands from a fresh clone: `make demo` (set up + run the main job), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Dogs vs. Cats photos for `make paper` (your own copy; the default is the shared test copy).
CATSDOGS ?= ../shared/data/catsdogs

.PHONY: demo test paper clean

# The venv is rebuilt only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# A local sweep on embedded Ray: no cluster, no download. Starts afresh each time.
demo: $(VENV)/.installed
	rm -rf runs/quick
	$(BIN)/prunerlib sweep sweeps/quick.yaml

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# The paper's Tables 1-3: both paper sweeps (continued if interrupted), then the report.
# A sweep that ends incomplete exits non-zero, and make stops before the report.
# (--resume is refused for a sweep that never started: it would hide a mistyped --storage.)
paper: $(VENV)/.installed
	$(BIN)/prunerlib sweep sweeps/paper_waveform.yaml $(if $(wildcard runs/paper_waveform/spec.yaml),--resume)
	$(BIN)/prunerlib sweep sweeps/paper_cnn.yaml $(if $(wildcard runs/paper_cnn/spec.yaml),--resume) --set data=$(abspath $(CATSDOGS))
	$(BIN)/prunerlib report runs/paper_waveform/results.parquet runs/paper_cnn/results.parquet --out runs/paper_report

clean:
	rm -rf $(VENV) runs
