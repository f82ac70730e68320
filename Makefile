# The two commands of the README: `make book` and `make test`. Both set up what they need
# (a virtual environment with the pinned packages, the Fashion-MNIST files) on a fresh
# machine; later runs reuse it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JOBS ?= 2
CHAPTER ?=
PRESET ?= large

# glibc returns every freed large tensor to the kernel and faults its pages back in at the
# next allocation: on this project's CPU machines half of chapter 5's time went to the
# kernel. Keeping freed memory in the heap leaves the results bit for bit the same.
export MALLOC_MMAP_THRESHOLD_ ?= 4294967296
export MALLOC_TRIM_THRESHOLD_ ?= 4294967296

.PHONY: book test install data browser-test benchmarks publish push-site record stale-records clean

book: install data
	SUBNETS_HEADLESS=1 $(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "The book is in _build/html/index.html"

# One thread per test worker: JOBS workers on JOBS cores, not JOBS x cores threads.
test: install data
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) --dist loadgroup -m "not browser" \
	  --doctest-modules tests lib

browser-test: install
	$(PY) -m pytest tests/test_book.py -m browser

benchmarks: install data
	for b in relevance curvature influence resampling chapter_times; do $(PY) benchmarks/$$b.py || exit 1; done

# Push the built site to the gh-pages branch of REMOTE (default: origin) with ghp-import;
# -n adds .nojekyll so that folders starting with _ are served.
REMOTE ?= origin
SITE ?= _build/html
publish: book push-site

push-site:
	$(VENV)/bin/ghp-import -n -p -f -r $(REMOTE) -m "Publish the book" $(SITE)

# Record one chapter's preset for the book's "At a larger scale" part (one at a time: two
# share the cores): make record CHAPTER=04 [PRESET=large].
record: install data
	@test -n "$(CHAPTER)" || { echo "CHAPTER: expected a chapter number, as in make record CHAPTER=04" >&2; exit 2; }
	$(PY) -m subnets.run $(CHAPTER) --preset $(PRESET) --record

# Recorded larger-scale runs whose chapter or library changed since they were recorded.
stale-records: install
	$(PY) -m subnets.run --stale

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (subnets)"
	touch $(STAMP)

# Fashion-MNIST: found where data.load looks for it, else installed from Debian when we
# can (root with apt-get), else a message that says where to put the files.
data: install
	@$(PY) -c "from subnets.data import find_idx; [find_idx(s) for s in ('train-images-idx3-ubyte', 't10k-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-labels-idx1-ubyte')]" 2>/dev/null \
	|| { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	       apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	     else \
	       echo "Fashion-MNIST is missing. Install Debian's dataset-fashion-mnist (as root: apt-get install dataset-fashion-mnist)," >&2; \
	       echo "or put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz" >&2; \
	       echo "in data/fashion-mnist/ (or \$$SUBNETS_DATA/fashion-mnist/)." >&2; exit 1; \
	     fi; }

clean:
	rm -rf _build
