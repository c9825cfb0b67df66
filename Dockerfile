# retention-scorer worker image. Not built on the development machine (no Docker engine there).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md* ./
COPY models ./models
COPY schemas ./schemas
COPY streams ./streams
RUN pip install --no-cache-dir . && useradd --create-home retention && mkdir /data \
    && chown retention /data
USER retention
ENV RETENTION_DATA_DIR=/data RETENTION_SCHEMA_DIR=/app/schemas
EXPOSE 6066
CMD ["python", "-m", "streams", "worker", "-l", "info"]
