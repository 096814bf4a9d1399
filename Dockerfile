# The production image: Courier and its runtime dependencies only (no test extra), run as
# an unprivileged user. Configuration comes from COURIER_* environment variables at run
# time; nothing secret is baked in. One image serves every role:
#   courier api | worker | migrate | upstream-mock | token ... (see docker-compose.yml)

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/courier
WORKDIR /src
COPY . .
RUN /opt/courier/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/courier/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/courier /opt/courier
RUN useradd --system --uid 10001 --create-home --home-dir /home/courier --shell /usr/sbin/nologin courier
USER courier
WORKDIR /home/courier
EXPOSE 8000
ENTRYPOINT ["courier"]
CMD ["api", "--bind", "0.0.0.0:8000"]
