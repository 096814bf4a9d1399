FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY actors ./actors
COPY api ./api
COPY courier ./courier
COPY middleware ./middleware
COPY store ./store
RUN pip install . && useradd --system --uid 10001 courier
USER courier
ENTRYPOINT ["courier"]
CMD ["api", "--bind", "0.0.0.0:8000"]
