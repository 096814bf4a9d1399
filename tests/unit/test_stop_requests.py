"""A burst of stop signals is one request; a later signal is a second one."""

from __future__ import annotations

import signal
import time

from courier.stop_requests import STOP_SIGNALS, StopRequests, coalesce_stop_signals


def test_copies_of_a_signal_count_once_and_a_later_signal_passes_through():
    seen: list[int] = []
    requests = StopRequests(lambda signum, _frame: seen.append(signum), copies_within_s=0.2)

    for _ in range(3):  # direct, forwarded by the main process, forwarded by the supervisor
        requests(signal.SIGTERM, None)
    assert seen == [signal.SIGTERM]

    time.sleep(0.25)  # the window is the point under test: a second request comes later
    requests(signal.SIGTERM, None)
    assert seen == [signal.SIGTERM, signal.SIGTERM]


def test_the_process_stop_handlers_share_one_request():
    def dramatiq_like(signum, frame):
        pass

    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        for signum in STOP_SIGNALS:
            signal.signal(signum, dramatiq_like)
        coalesce_stop_signals()
        wrapped = {signal.getsignal(signum) for signum in STOP_SIGNALS}
        [requests] = wrapped
        assert isinstance(requests, StopRequests)
        assert requests.handler is dramatiq_like
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
