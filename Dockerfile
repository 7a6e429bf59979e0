# llmtap image: the `llmtap` CLI with its pinned dependencies, run as a non-root user.
#
#   docker build -t llmtap .
#   docker run --rm llmtap check --wait-seconds 60
#
# Dependencies are installed in their own layer (from pyproject.toml's list, constrained by
# requirements.lock) so that a source change does not download torch again.
# TORCH_INDEX_URL adds PyTorch's CPU-only wheel index: the embedding model runs on CPU here, and
# the default PyPI wheels bring several GB of CUDA libraries. Build with
# `--build-arg TORCH_INDEX_URL=` to install from PyPI only.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/llmtap
WORKDIR /src
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/runtime-requirements.txt \
    && /opt/llmtap/bin/pip install --constraint requirements.lock \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        --requirement /tmp/runtime-requirements.txt
COPY README.md ./
COPY llmtap/ llmtap/
COPY collectors/ collectors/
COPY processors/ processors/
COPY sinks/ sinks/
COPY schemas/ schemas/
RUN /opt/llmtap/bin/pip install --constraint requirements.lock \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} . \
    && /opt/llmtap/bin/python -c "import llmtap.cli, llmtap.collectors, llmtap.sinks"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/llmtap/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    LLMTAP_DATA_DIR=/var/lib/llmtap
RUN groupadd --system --gid 10001 llmtap \
    && useradd --system --uid 10001 --gid llmtap --home-dir /var/lib/llmtap --no-create-home \
        --shell /usr/sbin/nologin llmtap \
    && install --directory --owner=llmtap --group=llmtap --mode=0750 /var/lib/llmtap
COPY --from=build /opt/llmtap /opt/llmtap
USER llmtap:llmtap
WORKDIR /var/lib/llmtap
ENTRYPOINT ["llmtap"]
CMD ["--help"]
