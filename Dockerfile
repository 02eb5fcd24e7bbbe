# Image for the `demo` compose service: the library and its `vimbiso-state` CLI.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .
RUN pip install . && useradd --create-home --uid 10001 app
USER app

ENV STATE_BACKEND=redis \
    REDIS_STATE_URL=redis://redis-state:6379/0
CMD ["vimbiso-state", "demo"]
