"""Screenshots of every console page at 1280x800 and 390x844, for docs/console.md (docs/console/*.png).

    IMAP_RUNTIME_SERVICES_ENV=/tmp/imap-runtime/test/services.env .venv/bin/python -m tests.browser.screenshots

Uses the test servers (scripts/services.sh): a runtime on a scratch database, a Dovecot mailbox with a few mails,
a second one with a wrong password (to show an unHealthy mailbox and its reason), and one reply.
"""
from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import pymongo

from app.process import Runtime
from tests.browser.conftest import make_driver, quit_driver
from tests.browser.test_console_browser import add_mailbox, html_mail, sign_in, wait
from tests.conftest import MailServer, read_env_file, wait_for
from tests.e2e import Caller, runtime_config

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "console"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
PASSWORD = "screenshot-console-pw"


def main() -> int:
    services = read_env_file(Path(os.environ["IMAP_RUNTIME_SERVICES_ENV"]))
    name = f"shots_{uuid.uuid4().hex[:8]}"
    mongo_url = services["MONGO_URL"].replace("/imap_runtime?", f"/{name}?")
    prefix = f".s{uuid.uuid4().hex[:8]}"
    rt = Runtime(runtime_config(services, mongo_url=mongo_url, prefix=prefix, console_password=PASSWORD))
    rt.start()
    driver = make_driver()
    mail = MailServer(services)
    try:
        driver.base = f"http://127.0.0.1:{rt.web_port}"
        staff, staff_pw = mail.add_user("support")
        customer, _ = mail.add_user("customer")
        shot(driver, "login", driver.base + "/console/login")
        sign_in(driver, PASSWORD)
        add_mailbox(driver, mail, staff, staff_pw, Path(services["CA_CERT"]).read_text())
        inbox_id = driver.current_url.split("/console/mailboxes/")[1].split("?")[0]
        caller = Caller(services["RABBITMQ_HOST"], prefix)
        caller.create_integration("broken-example", mail.details("sales", "a-wrong-password"))
        caller.close()
        wait_for(lambda: (rt.storage.get_integration(inbox_id) or {}).get("state") == "idle", timeout=15)
        for subject, who in (("Where is my order 1042?", "Carla Customer"), ("Invoice for November", "Ben Buyer"),
                             ("Can I change my delivery address?", "Dana Doe")):
            mail.append(staff, staff_pw, html_mail(to=f"{staff}@localhost", sender=f"{who} <{customer}@localhost>",
                                                   subject=subject, html=f"<p>Hello,</p><p>{subject}</p>"
                                                   "<p>Thanks,<br><b>" + who + "</b></p>"))
            time.sleep(0.3)
        wait_for(lambda: rt.storage.db["standalone_conversations"].count_documents({}) >= 3, timeout=15)
        wait_for(lambda: (rt.storage.get_integration("broken-example") or {}).get("state") in ("backoff", "unhealthy"),
                 timeout=30)
        shot(driver, "mailboxes", driver.base + "/")
        shot(driver, "mailbox", driver.base + f"/console/mailboxes/{inbox_id}")
        shot(driver, "conversations", driver.base + "/console/conversations")
        conv = rt.storage.db["standalone_conversations"].find_one({}, sort=[("createdAt", 1)])
        driver.get(driver.base + f"/console/conversations/{conv['_id']}")
        driver.find_element("css selector", '[data-testid="reply-body"]').send_keys("It left our warehouse today.")
        driver.find_element("css selector", '[data-testid="reply-send"]').click()
        wait(driver, 20).until(lambda d: d.find_elements("css selector", '[data-testid="reply-sent"]'))
        shot(driver, "conversation", driver.base + f"/console/conversations/{conv['_id']}")
        shot(driver, "health", driver.base + "/console/health")
    finally:
        quit_driver(driver)
        rt.stop()
        pymongo.MongoClient(mongo_url).drop_database(name)
    print(json.dumps(sorted(p.name for p in OUT.glob("*.png"))))
    return 0


def shot(driver: object, page: str, url: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for size, (width, height) in SIZES.items():
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {  # type: ignore[attr-defined]
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": size == "phone"})
        driver.get(url)  # type: ignore[attr-defined]
        time.sleep(0.6)  # frames and live rows settle
        driver.save_screenshot(str(OUT / f"{page}-{size}.png"))  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
