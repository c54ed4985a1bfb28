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
# (counterweight-client is this repository's own, installed with the code below.)
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(d for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'] if not d.startswith('counterweight')))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY README.md ./
COPY client ./client
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
# A regular install: the code, the migrations and the client land in site-packages as
# counterweight.* and counterweight_client. The two directories exist in the image so
# that volumes mounted there belong to its user.
RUN pip install --no-deps ./client . \
    && rm -rf /app/build /app/*.egg-info /app/client/build \
    && useradd --create-home --uid 1000 counterweight \
    && mkdir -p "$COUNTERWEIGHT_HOME" /var/lib/counterweight-store \
    && chown counterweight "$COUNTERWEIGHT_HOME" /var/lib/counterweight-store

USER counterweight
EXPOSE 8000
CMD ["counterweight", "api", "--host", "0.0.0.0", "--port", "8000"]
