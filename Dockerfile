# One image for web (daphne), processor, projector and the one-shot migrate job (see docker-compose.yml).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

RUN groupadd --system bank && useradd --system --gid bank --home-dir /app --no-create-home bank

# Dependencies first, so code changes do not reinstall them. The wheels (confluent-kafka, psycopg-binary) bundle
# their native libraries: no compiler needed.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Static files are collected into the image (STATIC_ROOT = var/static); the key is a throwaway for this step only.
RUN DJANGO_SECRET_KEY=collectstatic-build-only DJANGO_DEBUG=false python manage.py collectstatic --noinput

USER bank
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "server.asgi:application"]
