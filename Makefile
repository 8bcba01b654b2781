# The README's two commands: `make demo` and `make test`. Both create .venv on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test unit docs lint format bench face-weights speaker-weights speech-embedding-weights clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch/torchvision pinned for this machine (taken from local disk); the package declares ranges.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[all]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/siamkit demo --out runs/demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -x --durations=15

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

# the documentation site (docs/ + mkdocs.yml); --strict fails on broken links and missing references
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

# dlib's pre-trained face ResNet for configs/faces-pretrained.yaml: face-api.js's TF.js weights from
# the npm registry (npm pack: a tarball, no install scripts run), converted to safetensors.
FACE_API := vladmandic-face-api-1.7.15
FACE_WEIGHTS := runs/pretrained/face_resnet.safetensors

face-weights: $(FACE_WEIGHTS)

$(FACE_WEIGHTS): $(STAMP)
	mkdir -p runs/pretrained/face-api
	cd runs/pretrained/face-api && npm pack --silent @vladmandic/face-api@1.7.15 >/dev/null \
		&& tar xzf $(FACE_API).tgz package/model/face_recognition_model.bin \
			package/model/face_recognition_model-weights_manifest.json
	$(BIN)/siamkit convert-face-api runs/pretrained/face-api/package/model $(FACE_WEIGHTS)

# the GE2E speaker encoder for configs/fsdd-speakers-pretrained.yaml: Resemblyzer's PyPI wheel
# (downloaded, not installed; Apache-2.0), its pretrained.pt read with weights_only=True into safetensors
RESEMBLYZER := Resemblyzer-0.1.4-py3-none-any.whl
SPEAKER_WEIGHTS := runs/pretrained/ge2e_speaker.safetensors

speaker-weights: $(SPEAKER_WEIGHTS)

$(SPEAKER_WEIGHTS): $(STAMP)
	mkdir -p runs/pretrained
	$(BIN)/pip download --quiet --no-deps resemblyzer==0.1.4 -d runs/pretrained
	$(BIN)/python -c "import zipfile; zipfile.ZipFile('runs/pretrained/$(RESEMBLYZER)').extract('resemblyzer/pretrained.pt', 'runs/pretrained')"
	$(BIN)/siamkit convert-resemblyzer runs/pretrained/resemblyzer/pretrained.pt $(SPEAKER_WEIGHTS)

# Google's speech embedding for configs/fsdd-keywords-pretrained.yaml and
# fsdd-text-speech-pretrained.yaml: openWakeWord's PyPI wheel (downloaded, not installed; the
# embedding is Google's TF-Hub module, Apache-2.0, but openWakeWord puts the models it ships under
# CC BY-NC-SA 4.0: docs/speech.md, "Licence"), its embedding_model.onnx initializers read into
# safetensors
OPENWAKEWORD := openwakeword-0.5.1-py3-none-any.whl
SPEECH_EMBEDDING_ONNX := openwakeword/resources/models/embedding_model.onnx
SPEECH_EMBEDDING_WEIGHTS := runs/pretrained/speech_embedding.safetensors

speech-embedding-weights: $(SPEECH_EMBEDDING_WEIGHTS)

$(SPEECH_EMBEDDING_WEIGHTS): $(STAMP)
	mkdir -p runs/pretrained
	$(BIN)/pip download --quiet --no-deps openwakeword==0.5.1 -d runs/pretrained
	$(BIN)/python -c "import zipfile; zipfile.ZipFile('runs/pretrained/$(OPENWAKEWORD)').extract('$(SPEECH_EMBEDDING_ONNX)', 'runs/pretrained')"
	$(BIN)/siamkit convert-speech-embedding runs/pretrained/$(SPEECH_EMBEDDING_ONNX) $(SPEECH_EMBEDDING_WEIGHTS)

clean:
	rm -rf $(VENV) runs site .pytest_cache
