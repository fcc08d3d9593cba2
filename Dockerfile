# One Dockerfile for every role (api, worker, migrations); the command picks the role.
# CPU by default; for GPU workers build with TORCH_INDEX=https://download.pytorch.org/whl/cu128
# and TORCHVISION=0.28.0 (the release paired with torch 2.13): its nvJPEG decodes JPEGs on the
# GPU (workers/gpujpeg.py), without which one worker stays near the CPU decoders' ~1,800 img/s.
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCHVISION=
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=0 CLIPMOD_DATA_DIR=/data
WORKDIR /app
# A plain (non-editable) install: the package finds its model, policies and migrations itself.
COPY pyproject.toml README.md ./
COPY clipmod ./clipmod
COPY api ./api
COPY workers ./workers
COPY cli ./cli
COPY migrations ./migrations
COPY policies ./policies
RUN pip install --index-url "$TORCH_INDEX" torch==2.13.0 \
      ${TORCHVISION:+"torchvision==$TORCHVISION"} && pip install .
RUN useradd --uid 10001 clipmod && mkdir -p /data && chown clipmod /data
USER clipmod
EXPOSE 8000
CMD ["clipmod", "serve", "--host", "0.0.0.0", "--port", "8000"]
