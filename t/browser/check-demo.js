// Loads the demo page in Debian's Chromium (headless, through
// playwright-core) and prints what the browser made of it as JSON: every
// <img> with its natural size, what the page's 404 and 400 links give when
// used as images, and where the screenshot went.
//
//   node check-demo.js <url> <screenshot.png>
//
// NODE_PATH must find playwright-core (t/196-demo-browser.t installs it
// under .build/).

'use strict';

const { chromium } = require('playwright-core');

async function main() {
    const [url, shot] = process.argv.slice(2);

    const browser = await chromium.launch({
        executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
        headless: true,
        args: ['--no-sandbox', '--disable-gpu', '--disable-quic',
               '--no-first-run', '--disable-background-networking',
               '--disable-component-update', '--disable-sync'],
    });

    try {
        const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
        const response = await page.goto(url, { waitUntil: 'load', timeout: 30000 });

        const images = await page.evaluate(() =>
            Array.from(document.images).map((img) => ({
                id: img.id,
                src: img.getAttribute('src'),
                complete: img.complete,
                naturalWidth: img.naturalWidth,
                naturalHeight: img.naturalHeight,
            })));

        // the failing examples, as the browser would use them in an <img>
        const links = await page.evaluate(async () => {
            const out = [];
            for (const a of document.querySelectorAll('a[href^="/selfies/"]')) {
                const href = a.getAttribute('href');
                const r = await new Promise((resolve) => {
                    const img = new Image();
                    img.onload = () => resolve({ decoded: true, w: img.naturalWidth });
                    img.onerror = () => resolve({ decoded: false, w: img.naturalWidth });
                    img.src = href;
                });
                const f = await fetch(href);
                out.push({ href, text: a.textContent, decoded: r.decoded,
                           naturalWidth: r.w, status: f.status,
                           contentType: f.headers.get('content-type') });
            }
            return out;
        });

        const metrics = await page.evaluate(() =>
            Array.from(document.querySelectorAll('a')).map((a) => a.getAttribute('href'))
                .filter((h) => h === '/metrics'));

        await page.screenshot({ path: shot, fullPage: true });

        console.log(JSON.stringify({ status: response.status(), images, links,
                                     metrics, screenshot: shot }));
    } finally {
        await browser.close();
    }
}

main().catch((e) => { console.error(String(e && e.stack || e)); process.exit(1); });
