# Builds autocompress and runs the demo: docker build -t autocompress . && docker run --rm autocompress
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md Makefile ./
COPY autocompress ./autocompress
COPY experiments ./experiments
COPY search_spaces ./search_spaces
ENV RAY_AUTH_MODE=disabled PIP_NO_CACHE_DIR=1
# EXTRAS=postgres adds the PostgreSQL driver (docker-compose.yml builds it so)
ARG EXTRAS=""
# torch first and pinned (CPU wheel from the PyTorch CPU index), then the package
RUN python -m venv .venv \
 && .venv/bin/pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && .venv/bin/pip install -e ".${EXTRAS:+[$EXTRAS]}" && touch .venv/.installed
CMD ["make", "demo"]
