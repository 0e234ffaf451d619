# A GPU training image: every dependency from requirements.lock (the lock `make run` uses),
# SentencePiece's command-line tools (spm_train, spm_encode), and a non-root user.
# The repository, with its data and DVC cache, is mounted at /workspace (README, "Docker"): the code
# that runs is the code DVC hashes, and the image holds no data.
FROM pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

RUN apt-get update \
    && apt-get install -y --no-install-recommends git sentencepiece \
    && rm -rf /var/lib/apt/lists/*

# The lock pins torch as well: the base image's build gives way to the locked version (the CUDA
# build on PyPI), so GPU runs and `make run` share every library that shapes an artifact.
COPY requirements.lock /opt/pile-gpt/requirements.lock
RUN python -m pip install --no-cache-dir -r /opt/pile-gpt/requirements.lock

RUN useradd --create-home --uid 1000 trainer \
    && git config --system --add safe.directory /workspace
USER trainer
WORKDIR /workspace
ENV PYTHONPATH=/workspace
CMD ["dvc", "repro"]
