# One image for the API and the workers. torch comes from PyPI, whose Linux wheels
# carry CUDA: a worker given a GPU (docker-compose.yml) trains on it, the API and a
# worker without one run on the CPU.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    COUNTERWEIGHT_HOME=/var/lib/counterweight

WORKDIR /app

# Dependencies first, from pyproject.toml alone: code changes do not reinstall torch.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY README.md ./
COPY service ./service
COPY workers ./workers
COPY counterweight_client ./counterweight_client
COPY migrations ./migrations
# Editable: the migrations are found beside the code (service/db/engine.py). The two
# directories exist in the image so that volumes mounted there belong to its user.
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 1000 counterweight \
    && mkdir -p "$COUNTERWEIGHT_HOME" /var/lib/counterweight-store \
    && chown counterweight "$COUNTERWEIGHT_HOME" /var/lib/counterweight-store

USER counterweight
EXPOSE 8000
CMD ["counterweight", "api", "--host", "0.0.0.0", "--port", "8000"]
