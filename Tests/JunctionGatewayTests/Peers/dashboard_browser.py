"""Drives Junction's dashboard in a real headless Chromium, as an operator would.

    python3 dashboard_browser.py URL TOKEN SCREENSHOT_DIR

The gateway behind URL holds topic `orders` (published), group `billing` with
lag, and one dead letter of group `workers`. The script logs in, sees the
topic and the lag, browses a message, resends the dead letter and watches the
group's not-resent count drop to 0; each page is saved as a PNG in
SCREENSHOT_DIR. It prints one line per step and exits non-zero on the first
step that fails, saying which.
"""
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

url, token, shots = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(shots, exist_ok=True)

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,860"]:
    options.add_argument(argument)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
# The pages re-render as they refresh: an element found a moment ago may be
# gone when its text is read. A wait tries again rather than failing.
wait = WebDriverWait(driver, 20, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))


def step(name):
    print(f"step: {name}", flush=True)


def shot(name):
    time.sleep(0.3)  # the last repaint before the picture; no assertion depends on it
    driver.save_screenshot(os.path.join(shots, name + ".png"))


def text_of(selector):
    return driver.find_element(By.CSS_SELECTOR, selector).text


def cell(table_id, row_text, column):
    """The text of `column` (0-based) in the first row of the table whose text contains row_text."""
    for row in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr"):
        cells = row.find_elements(By.TAG_NAME, "td")
        if cells and row_text in cells[0].text:
            return cells[column].text
    return None


try:
    step("the page asks for a token")
    driver.get(url)
    wait.until(EC.visibility_of_element_located((By.ID, "login-view")))
    shot("login")

    step("a wrong token is refused")
    driver.find_element(By.ID, "token").send_keys("not-the-token")
    driver.find_element(By.ID, "login").click()
    wait.until(lambda d: "refused" in text_of("#login-error") or "admin" in text_of("#login-error"))

    step("logs in")
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "login").click()
    wait.until(EC.visibility_of_element_located((By.ID, "overview-topics")))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "svg.chart"))
    shot("overview")

    step("sees the published topic")
    driver.find_element(By.ID, "nav-topics").click()
    wait.until(lambda d: cell("topics-table", "orders", 2) not in (None, "0"))
    print(f"topic orders holds {cell('topics-table', 'orders', 2)} messages", flush=True)
    shot("topics")

    step("sees the group's lag")
    driver.find_element(By.ID, "nav-groups").click()
    wait.until(lambda d: cell("groups-table", "billing", 3) is not None)
    lag = cell("groups-table", "billing", 3)
    assert lag not in ("0", None), f"billing shows lag {lag}"
    print(f"group billing lag {lag}, {cell('groups-table', 'billing', 4)} s", flush=True)
    shot("groups")
    for row in driver.find_elements(By.CSS_SELECTOR, "#groups-table tbody tr"):
        if "billing" in row.text:
            row.click()
            break
    wait.until(EC.visibility_of_element_located((By.ID, "group-lag")))
    assert text_of("#group-lag") == lag, f"detail lag {text_of('#group-lag')} != {lag}"
    shot("group")

    step("browses a message")
    driver.find_element(By.ID, "nav-messages").click()
    wait.until(EC.visibility_of_element_located((By.ID, "browse-topic")))
    driver.find_element(By.ID, "browse-topic").send_keys("orders")
    driver.find_element(By.ID, "browse-go").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#messages-table tbody tr.clickable"))
    driver.find_elements(By.CSS_SELECTOR, "#messages-table tbody tr.clickable")[0].click()
    wait.until(EC.visibility_of_element_located((By.ID, "message-detail")))
    assert "order-" in text_of("#message-detail"), text_of("#message-detail")
    shot("messages")

    step("resends the dead letter")
    driver.find_element(By.ID, "nav-dlq").click()
    wait.until(EC.visibility_of_element_located((By.ID, "dlq-group")))
    driver.find_element(By.ID, "dlq-group").send_keys("workers")
    driver.find_element(By.ID, "dlq-load").click()
    wait.until(lambda d: d.find_elements(By.ID, "dlq-pending") and text_of("#dlq-pending") == "1")
    shot("dead-letters")
    driver.find_element(By.ID, "dlq-resend").click()
    wait.until(lambda d: d.find_elements(By.ID, "dlq-pending") and text_of("#dlq-pending") == "0")
    wait.until(lambda d: "done" in text_of("#dlq-job"))
    shot("dead-letters-resent")

    step("the group's not-resent count dropped")
    driver.find_element(By.ID, "nav-groups").click()
    wait.until(lambda d: cell("groups-table", "workers", 8) == "0")

    step("plugins, flows and connections")
    driver.find_element(By.ID, "nav-plugins").click()
    wait.until(lambda d: cell("plugins-table", "native", 1) == "tcp")
    shot("plugins")
    driver.find_element(By.ID, "nav-connections").click()
    wait.until(EC.presence_of_element_located((By.ID, "connections-table")))
    shot("connections")
    print("ok", flush=True)
except Exception as error:  # say which step failed, with what the page showed
    print(f"FAILED: {type(error).__name__}: {error}".strip(), flush=True)
    try:
        driver.save_screenshot(os.path.join(shots, "failure.png"))
        print("page text: " + driver.find_element(By.TAG_NAME, "body").text[:1500].replace("\n", " | "), flush=True)
        for entry in driver.get_log("browser"):
            print(f"console: {entry.get('level')} {entry.get('message')}", flush=True)
    except Exception:
        pass
    sys.exit(1)
finally:
    driver.quit()
