# The tuner image: the CLI with the PostgreSQL driver. One image serves every service of docker-compose.yml
# (worker, dashboard, export); the command picks the role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=3

# The database drivers; add `gpu` for TensorFlow's CUDA libraries (the Kubernetes GPU overlay's image):
#   docker build --build-arg EXTRAS=postgres,gpu -t tuner:gpu .
ARG EXTRAS=postgres,mysql

WORKDIR /src
COPY pyproject.toml README.md ./
COPY tuner ./tuner
RUN pip install ".[${EXTRAS}]" && rm -rf /src

# Not root: a worker only needs its working directory and Keras' dataset cache.
RUN useradd --create-home --uid 1000 tuner && mkdir -p /work/artifacts /home/tuner/.keras && chown -R tuner /work /home/tuner/.keras
USER tuner
WORKDIR /work

CMD ["tuner", "--help"]
